"""Every error type that more than one module raises, in one place (so no module imports another for it).

Each message names the file (and row or key) and the problem; the commands print it on one line and exit 2.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file or flag that does not fit the config's fields."""


class AnnotationError(ValueError):
    """A malformed annotation file or row; the message names the file, the row and the bad value."""


class StoreError(Exception):
    """A feature file that cannot be read or written as asked; the message names the file."""


class ExchangeError(Exception):
    """An export or import that cannot run at all (bad folder, bad manifest); the message names the path."""
