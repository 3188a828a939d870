"""Every error type that more than one module raises, in one place (so no module imports another for it).

Each message names the file (and row or key) and the problem. `AvafError` is the base of those that are
the user's input or environment, not a bug: every command prints its message on one line and exits 2
(`avaf.shared.cli.Command`).
"""

from __future__ import annotations


class AvafError(Exception):
    """Bad input or an unusable place: the message names the file and the problem."""


class ConfigError(AvafError, ValueError):
    """A config file or flag that does not fit the config's fields."""


class AnnotationError(AvafError, ValueError):
    """A malformed annotation file or row; the message names the file, the row and the bad value."""


class StoreError(AvafError):
    """A feature file that cannot be read or written as asked; the message names the file."""


class ExchangeError(AvafError):
    """An export or import that cannot run at all (bad folder, bad manifest); the message names the path."""


class OutputError(AvafError):
    """An output that cannot be written: it would replace earlier results (no --overwrite), the disk is full,
    the file is over the size limit, or the place is read-only; the message names the path and the cause."""
