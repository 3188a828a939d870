"""The one table of model variants: `ModelConfig.variant` names a row, the row says where its class lives.

Torch-free, so a command checks a variant's name before it imports torch (train/config.py). A variant is a
module holding its model class (with its `recipe` and `losses`, docs/training.md "Variants") and one line
here: "module:Class", imported when the model is built, or the class itself (tests add one that way).
"""

from __future__ import annotations

import importlib

MODELS: dict[str, str | type] = {
    "paper": "avaf.train.model:AVAFNet",
    "authors": "avaf.train.authors_model:AuthorsNet",
}


def model_class(variant: str) -> type:
    """The class of `variant`, importing its module on first use; a ValueError names the known ones."""
    if variant not in MODELS:
        raise ValueError(f"model.variant must be one of {list(MODELS)}, got {variant!r}")
    entry = MODELS[variant]
    if isinstance(entry, str):
        module, name = entry.split(":")
        return getattr(importlib.import_module(module), name)
    return entry
