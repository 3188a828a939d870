"""The installed avaf version, recorded in every file avaf writes and shown by every command's --version."""

from __future__ import annotations


def avaf_version() -> str:
    """The distribution's version, or "0+unknown" when running from a checkout that is not installed."""
    try:
        from importlib.metadata import version

        return version("avaf")
    except Exception:  # not installed (running from a checkout)
        return "0+unknown"
