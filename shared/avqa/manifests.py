"""Where the versioned data of `manifests/` (answer vocabulary, question types, split rules) is installed."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def manifest_path(name: str) -> Path:
    """Path of a file shipped in `manifests/` (installed as the data-only package `avaf.manifests`)."""
    spec = importlib.util.find_spec("avaf.manifests")
    folders = [Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"manifest {name!r} not found in {[str(f) for f in folders]}; is avaf installed?")
