"""The one typed config of `avaf-train` (DESIGN.md §5, STYLE.md "One typed config per stage").

Frozen dataclasses nested by concern; every default lives here and nowhere else. Override order:
defaults, then a YAML or TOML file, then overrides (the CLI flags), each validated against the fields:
an unknown key or a value of the wrong type is a `ConfigError` that names the key.

    cfg = load_config("run.yaml", {"model.no_sacl": True, "optim": {"lr": 3e-4}})
    cfg.to_dict()  # saved in every checkpoint and in the run folder
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ModelConfig:
    """AVAF-Net's sizes and the ablation switches, one per row of the paper's Table 3."""

    dim: int = 512  # D: CLIP ViT-B/32 token width, also the model width
    audio_dim: int = 128  # VGGish embedding width
    heads: int = 4
    ffn_dim: int = 2048
    dropout: float = 0.1
    n_answers: int = 42  # C: the fixed answer vocabulary in manifests/
    max_seconds: int = 60  # T: longer inputs are refused by the model; the data side pads to at most this
    visual_cls: bool = True  # visual input is the store's layout: token 0 is CLIP's CLS, dropped by the model
    no_tacl: bool = False  # without TACL: no temporal alignment loss
    no_avcm: bool = False  # without AVCM: F'_p = F_p, F'_a = F_a (both projected)
    no_sacl: bool = False  # without SACL: no spatial alignment loss
    no_qoaf: bool = False  # without QOAF's adaptive weights: plain concatenation of F''_p and F''_a
    no_all: bool = False  # without everything: pooled inputs -> linear classifier

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"model.dim ({self.dim}) must be divisible by model.heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for name in ("dim", "audio_dim", "heads", "ffn_dim", "n_answers", "max_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"model.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class LossConfig:
    """Eq. 14: CE + alpha * L_temp + beta * L_spat, and SACL's threshold and temperature (eq. 7-8)."""

    alpha: float = 1.0
    beta: float = 0.2
    sacl_phi: float = 0.019  # just under 1/49: every second has a positive patch (Table 4's best)
    sacl_tau: float = 0.4

    def __post_init__(self) -> None:
        if self.sacl_tau <= 0:
            raise ValueError(f"loss.sacl_tau must be positive, got {self.sacl_tau}")


@dataclass(frozen=True)
class OptimConfig:
    """The paper's recipe: Adam, lr 1e-4, x0.1 every 8 epochs, batch 32, 30 epochs, a fixed seed."""

    lr: float = 1e-4
    lr_step_epochs: int = 8
    lr_gamma: float = 0.1
    batch_size: int = 32
    epochs: int = 30
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Where the features come from and which questions to use (extended by the data loader)."""

    feats: str = ""  # path to feats.h5
    subset: str = "all"  # "all" or "real" (MUSIC-AVQA-Real: all-digit video ids)


@dataclass(frozen=True)
class RunConfig:
    """Where outputs go and what runs the model."""

    out_dir: str = "runs/avaf"
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    amp: bool = True  # autocast on GPU; ignored on CPU
    threads: int = 0  # torch threads on CPU; 0 = all cores


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved with every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (JSON/YAML-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a (possibly partial) nested dict; missing keys take the defaults."""
        return _build(cls, d, prefix="")


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type; the message names the key."""


def _check_type(key: str, value: Any, annotation: str) -> Any:
    """Refuse a value of the wrong type, naming the key; an int is accepted where a float is expected."""
    expected = {"int": int, "float": float, "bool": bool, "str": str}[annotation]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and expected is not bool:  # bool is an int subclass: refuse True as a width
        raise ConfigError(f"config key {key!r}: expected {annotation}, got bool {value!r}")
    if not isinstance(value, expected):
        raise ConfigError(f"config key {key!r}: expected {annotation}, got {type(value).__name__} {value!r}")
    return value


def _is_section(f: dataclasses.Field) -> bool:
    return f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory)


def _build(cls: type, d: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(d, Mapping):
        raise ConfigError(f"config section {prefix.rstrip('.')!r} must be a mapping, got {d!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r} (known here: {', '.join(fields)})")
    kwargs = {}
    for name, value in d.items():
        f = fields[name]
        if _is_section(f):
            kwargs[name] = _build(f.default_factory, value, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _check_type(prefix + name, value, str(f.type))
    try:
        return cls(**kwargs)
    except ValueError as e:  # __post_init__ range checks
        raise ConfigError(str(e)) from e


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Turn {"model.dim": 8} into {"model": {"dim": 8}}; None values (a flag not given) are dropped."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            value = _nest(value)
        if value is None:
            continue
        head, *rest = key.split(".")
        for part in reversed(rest):
            value = {part: value}
        _merge(out, {head: value})
    return out


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-update base in place with update; sections merge, values replace."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
    return base


def _toml_module(path: Path) -> Any:
    """tomllib (Python >= 3.11) or tomli; the project still supports 3.10."""
    try:
        import tomllib

        return tomllib
    except ModuleNotFoundError:
        try:
            import tomli

            return tomli
        except ModuleNotFoundError:
            raise ConfigError(f"{path}: TOML configs need Python >= 3.11 or `pip install tomli`") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML (.yaml/.yml), TOML (.toml) or JSON (.json) file as a nested dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".toml":
        d = _toml_module(path).loads(text)
    elif suffix == ".json":
        d = json.loads(text)
    elif suffix in (".yaml", ".yml"):
        d = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"config file {path}: unknown format {suffix!r} (use .yaml, .yml, .toml or .json)")
    if not isinstance(d, dict):
        raise ValueError(f"config file {path}: top level must be a mapping, got {type(d).__name__}")
    return d


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Resolve the config: defaults, then the file at `path` (if any), then `overrides`.

    `overrides` may be nested ({"model": {"dim": 8}}) or dotted ({"model.dim": 8}); None values are
    skipped so unset CLI flags don't override the file.
    """
    merged = TrainConfig().to_dict()
    if path is not None:
        file_dict = read_config_file(path)
        try:
            TrainConfig.from_dict(file_dict)  # validate the file alone, so its errors name the file
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
        _merge(merged, file_dict)
    _merge(merged, _nest(overrides or {}))
    return TrainConfig.from_dict(merged)
