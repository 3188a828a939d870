"""Checkpoints that never unpickle arbitrary objects: safetensors weights + config + answer vocabulary.

    runs/NAME/best/model.safetensors   the checkpoint selected on val (weights; metadata: config, answers)
    runs/NAME/last/model.safetensors   the latest epoch's weights
    runs/NAME/last/state-EPOCH.pt      optimizer and schedule for --resume (tensors and numbers only,
                                       loaded with torch.load(weights_only=True)); written before the
                                       weights, so the weights' epoch always has its state, whenever a
                                       run is killed

A checkpoint trained with another answer vocabulary, or whose weights do not fit its config, is refused
with a message naming the file and the difference.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from avaf.shared.avqa.answers import ANSWERS
from avaf.shared.errors import AvafError
from avaf.shared.files import atomic_path

from .config import TrainConfig
from .model import build_model

WEIGHTS = "model.safetensors"
STATE = "state-{epoch}.pt"
BEST, LAST = "best", "last"  # the run folder's two checkpoints


class CheckpointError(AvafError, ValueError):
    """A checkpoint that cannot be used as asked; the message names the file."""


def save(
    folder: Path, model: nn.Module, cfg: TrainConfig, epoch: int, metrics: dict, state: dict | None = None
) -> None:
    """Write weights (+ the resume state) into `folder`, replacing what was there only when complete."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "avaf-checkpoint",
        "config": json.dumps(cfg.to_dict(), sort_keys=True),
        "answers": json.dumps(list(ANSWERS)),
        "epoch": str(epoch),
        "metrics": json.dumps(metrics, sort_keys=True),
    }
    if state is not None:  # first the state of this epoch, then the weights that point to it
        with atomic_path(folder / STATE.format(epoch=epoch)) as tmp:
            torch.save(state, tmp)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(weights, str(tmp), metadata=meta)
    for old in folder.glob(STATE.format(epoch="*")):
        if old.name != STATE.format(epoch=epoch):
            old.unlink(missing_ok=True)


def read_meta(path: Path) -> dict:
    """Config (TrainConfig), answers, epoch and metrics stored with the weights."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({e})") from e
    if meta.get("format") != "avaf-checkpoint":
        raise CheckpointError(f"{path}: not an avaf checkpoint (no avaf metadata)")
    answers = json.loads(meta["answers"])
    if answers != list(ANSWERS):
        diff = next(
            (i for i, (a, b) in enumerate(zip(answers, ANSWERS)) if a != b), min(len(answers), len(ANSWERS))
        )
        raise CheckpointError(
            f"{path}: trained with another answer vocabulary ({len(answers)} answers, first difference at "
            f"index {diff}); this avaf uses manifests/answers.json ({len(ANSWERS)} answers)"
        )
    return {
        "path": path,
        "config": TrainConfig.from_dict(json.loads(meta["config"])),
        "epoch": int(meta["epoch"]),
        "metrics": json.loads(meta["metrics"]),
    }


def load_weights(model: nn.Module, path: Path) -> None:
    """Load weights into a model built from the same config; a mismatch names the file and the keys."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    weights = load_file(str(path))
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    wrong = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    if missing or extra or wrong:
        raise CheckpointError(
            f"{path}: weights do not fit this model's config (missing {missing[:3]}, unexpected {extra[:3]}, "
            f"wrong shape {[(k, tuple(weights[k].shape), tuple(own[k].shape)) for k in wrong[:3]]})"
        )
    model.load_state_dict(weights)


def load_model(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """The model of a checkpoint, in eval mode, and its metadata."""
    meta = read_meta(path)
    model = build_model(meta["config"].model)
    load_weights(model, meta["path"])
    return model.to(device).eval(), meta


def load_state(folder: Path, epoch: int) -> dict:
    """The resume state saved with the weights of `epoch` (tensors and plain numbers only)."""
    path = Path(folder) / STATE.format(epoch=epoch)
    if not path.is_file():
        raise CheckpointError(f"{path}: no resume state for epoch {epoch} (nothing to resume)")
    return torch.load(path, map_location="cpu", weights_only=True)
