"""The ToMe-14 token encoder of the `tspm` feature pack (DESIGN.md §3b; docs/feature-packs.md).

timm `vit_large_patch16_384` (ImageNet-21k -> 1k AugReg weights, timm's default tag), head and pooling removed,
Token Merging (`tome.py`) at r = 25 in each of the first 23 blocks: 577 tokens -> 14, width 1024. Output: the
final LayerNorm applied to all 14 tokens, class token first (`tome.py` gives the order), float32, as TSPM's
`scripts/extract_ToMe/extract_tome14.py` saves them (fp32 model, `model.head = Identity`, `global_pool = None`).

Preprocessing, as that script does from the decoded frame: torchvision `Resize(int(256 / 224 * 384) = 438,
BICUBIC)` on a PIL image (shorter side to 438, longer side int(438 * long / short), PIL's bicubic: antialiased,
rounded to uint8), `CenterCrop(384)` (offsets int(round((size - 384) / 2))), `ToTensor`, `Normalize` with the
model's mean and std (0.5, 0.5, 0.5).

Weights: "default" (timm's default pretrained tag), another timm tag of the model, a local `.safetensors` file
holding timm's own state dict of that model (head keys optional: the head is dropped), or "random" (seeded).
The checksum (`state_dict_sha256`) is over the tensors loaded into the headless model.

    enc = load_tome(device="cuda")
    tokens = enc.encode_frames(frames)          # frames: uint8 (B, H, W, 3), any size -> (B, 14, 1024)
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from torch import Tensor, nn

from avaf.extract.decode.views import View, resize_view
from avaf.extract.encoders.batching import pad_batch
from avaf.extract.encoders.tome import token_schedule, tome_forward
from avaf.extract.encoders.weights import (
    WeightsFile,
    WeightsFileError,
    WeightsUnavailable,
    check_precision,
    fetch,
    hub_offline_unless_reachable,
    hub_url,
    precision_autocast,
    skip_init,
    state_dict_sha256,
)
from avaf.shared.files import atomic_path

log = logging.getLogger(__name__)

_FIX = (
    "Fix: on a machine with network save timm's state dict as safetensors, e.g. "
    "safetensors.torch.save_file(timm.create_model('vit_large_patch16_384', pretrained=True).state_dict(), "
    "'timm-vit_large_patch16_384.augreg_in21k_ft_in1k.safetensors'), copy it here and pass its path "
    "(or its folder as weights_dir); or pass 'random' for a smoke run."
)

MODEL_NAME = "vit_large_patch16_384"
TSPM_R = (25,) * 23  # r per block; the 24th block merges nothing
RESIZE_RATIO = 256 / 224  # TSPM's Resize(int((256 / 224) * input_size))


def default_tag(model_name: str = MODEL_NAME) -> str:
    """The pretrained tag timm loads for `model_name` without one (timm 1.0: 'augreg_in21k_ft_in1k')."""
    cfg = timm.models.get_pretrained_cfg(model_name)
    if cfg is None or not cfg.tag:
        raise ValueError(f"timm has no pretrained weights for {model_name!r}")
    return cfg.tag


def tome_weights_filename(model_name: str, tag: str) -> str:
    """File name of a timm tag's state dict in a `weights_dir` folder."""
    return f"timm-{model_name}.{tag}.safetensors"


def resize_crop(rgb: np.ndarray, input_size: int = 384, resize_size: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> (S, S, 3) uint8: PIL bicubic resize of the shorter side, then a centre crop, with
    torchvision's `Resize(int)` and `CenterCrop` geometry. resize_size defaults to int(256 / 224 * S)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) frame, got {rgb.dtype} {rgb.shape}")
    size = resize_size or int(RESIZE_RATIO * input_size)
    h, w = rgb.shape[:2]
    if min(h, w) == 0 or size < input_size:
        raise ValueError(f"cannot resize a {w}x{h} frame to shorter side {size} and crop {input_size}")
    return resize_view(rgb, View(input_size, size))  # the decode side's view: the same bytes, less work


def preprocess(
    frames: np.ndarray | Tensor,
    input_size: int = 384,
    mean: tuple[float, ...] = (0.5, 0.5, 0.5),
    std: tuple[float, ...] = (0.5, 0.5, 0.5),
    resize_size: int | None = None,
) -> Tensor:
    """uint8 frames (B, H, W, 3) -> normalised pixels (B, 3, S, S) float32, as TSPM's transform_norm."""
    frames = frames.cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"expected uint8 frames (B, H, W, 3), got shape {frames.shape}")
    crops = [resize_crop(f, input_size, resize_size) for f in frames]
    x = torch.from_numpy(np.stack(crops)) if crops else torch.zeros(0, input_size, input_size, 3)
    x = x.permute(0, 3, 1, 2).float().div_(255)  # (B, 3, S, S), torchvision's ToTensor
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)  # torchvision's Normalize: sub then div, in place (the same bits, fewer copies)


@dataclass
class _Source:
    kind: str  # "random", "tag" or "file"
    label: str  # what the config records: "random", the tag, or the file name
    path: Path | None = None
    tag: str | None = None  # the timm tag whose weights these are, when known


def load_tome(
    pretrained: str = "default",
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    *,
    model_name: str = MODEL_NAME,
    model_kwargs: dict | None = None,
    r: tuple[int, ...] = TSPM_R,
    weights_dir: str | os.PathLike | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> ToMeEncoder:
    """A frozen timm ViT with Token Merging, in eval mode, ready to encode decoded frames.

    pretrained: "default" (timm's default tag of `model_name`), a timm tag, a local .safetensors file of
    timm's own state dict, or "random" (seeded; for tests and smoke runs only). With `weights_dir`, a tag is
    read from `tome_weights_filename` there and never downloaded. model_kwargs go to `timm.create_model`
    (tests build tiny ViTs with them). precision: "fp32", or "fp16"/"bf16" autocast; outputs are fp32.
    """
    check_precision(precision)
    kwargs = dict(model_kwargs or {})
    source = _resolve_source(model_name, pretrained, weights_dir)
    if kwargs and source.kind == "tag":
        raise ValueError(
            f"model_kwargs {kwargs} change {model_name}: use a local file or 'random', not a tag"
        )
    model = _build(model_name, source, kwargs, seed)
    sha = state_dict_sha256(model.state_dict())  # fp32, as loaded, before moving to the device
    if source.kind == "random":
        log.warning(
            "ToMe %s: RANDOM weights (seed %d): features for tests and smoke runs only", model_name, seed
        )
    model = model.to(device).eval().requires_grad_(False)
    log.info("ToMe %s (%s): r=%s sha256=%s", model_name, source.label, list(r), sha[:12])
    return ToMeEncoder(
        model,
        model_name=model_name,
        pretrained=source.label,
        weights_sha256=sha,
        r=tuple(int(v) for v in r),
        precision=precision,
        batch_size=batch_size,
    )


def fetch_weights(folder: str | os.PathLike, tag: str = "default", model_name: str = MODEL_NAME) -> Path:
    """Download timm's `tag` of the model (needs network) and save its state dict as safetensors under the
    name `load_tome(weights_dir=folder)` reads; a file already there is kept."""
    done, failed = fetch({"tome": weights_file(folder, tag, model_name)})
    if failed:
        raise WeightsUnavailable(failed["tome"])
    return done["tome"]


def weights_file(
    folder: str | os.PathLike, tag: str = "default", model_name: str = MODEL_NAME
) -> WeightsFile:
    """timm's `tag` of the model in `folder` (`tome_weights_filename`); its hub file, model.safetensors,
    holds the same state dict (the classifier head too, which the loader drops)."""
    from safetensors.torch import save_file

    tag = default_tag(model_name) if tag == "default" else tag
    hub = timm.models.get_pretrained_cfg(f"{model_name}.{tag}")
    url = hub_url(hub.hf_hub_id, "model.safetensors") if hub and hub.hf_hub_id else (hub.url if hub else "")

    def download(path: Path) -> None:
        with hub_offline_unless_reachable():
            model = timm.create_model(f"{model_name}.{tag}", pretrained=True, num_classes=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))

    return WeightsFile(
        f"timm {model_name}.{tag}", url, Path(folder) / tome_weights_filename(model_name, tag), download
    )


def find_weights(
    pretrained: str = "default",
    weights_dir: str | os.PathLike | None = None,
    model_name: str = MODEL_NAME,
) -> Path | None:
    """The local file `load_tome` will read (None: random, or a tag timm fetches when it builds the model),
    found as it finds it, nothing loaded: a missing file raises its one-line fix before any other work."""
    return _resolve_source(model_name, pretrained, weights_dir).path


def _resolve_source(model_name: str, pretrained: str, weights_dir: str | os.PathLike | None) -> _Source:
    if pretrained == "random":
        return _Source("random", "random")
    tags = [name.split(".", 1)[1] for name in timm.list_pretrained(f"{model_name}.*")]
    tag = default_tag(model_name) if pretrained == "default" else pretrained
    if tag in tags:
        if weights_dir is None:
            return _Source("tag", tag, tag=tag)
        path = Path(weights_dir) / tome_weights_filename(model_name, tag)
        if not path.is_file():
            raise WeightsUnavailable(f"{path} not found in the weights folder {weights_dir}. {_FIX}")
        return _Source("file", tag, path, tag=tag)
    path = Path(pretrained).expanduser()
    if path.is_file():
        return _Source("file", path.name, path)
    raise ValueError(
        f"pretrained={pretrained!r} is neither 'default', a timm tag of {model_name} "
        f"({', '.join(tags) or 'none'}), an existing .safetensors file, nor 'random'"
    )


def _build(model_name: str, source: _Source, kwargs: dict, seed: int) -> nn.Module:
    """The headless model (num_classes=0) in fp32 on the CPU, with its weights."""
    if source.kind == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
    name = model_name if source.tag is None else f"{model_name}.{source.tag}"  # its pretrained_cfg: mean, std
    if source.kind == "tag":
        try:
            with hub_offline_unless_reachable():
                return timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as e:  # timm raises hub / OS errors offline
            raise WeightsUnavailable(
                f"timm {model_name}.{source.label}: not in the Hugging Face cache and the download failed "
                f"({type(e).__name__}: {' '.join(str(e).split())[:300]}). {_FIX}"
            ) from e
    with skip_init():  # every tensor is overwritten by the strict load below
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    model.load_state_dict(_read_state_dict(source.path, model))
    return model


def _read_state_dict(path: Path, model: nn.Module) -> dict[str, Tensor]:
    """The file's tensors checked against the model's keys and shapes (head keys dropped); errors name the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise WeightsFileError(f"{path}: expected a .safetensors file of timm's state dict")
    try:
        sd = {k: v for k, v in load_file(str(path)).items() if not k.startswith("head.")}
    except (SafetensorError, OSError) as e:
        raise WeightsFileError(f"{path} is not a readable safetensors file: {e}") from e
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    shapes = [
        f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}"
        for k, v in want.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or extra or shapes:
        raise WeightsFileError(
            f"{path} is not a timm state dict of this model (timm key layout, e.g. 'blocks.0.attn.qkv.weight'): "
            f"{len(missing)} missing keys {missing[:3]}, {len(extra)} unexpected keys {extra[:3]}, "
            f"{len(shapes)} shape mismatches {shapes[:3]}"
        )
    return {k: v.float() for k, v in sd.items()}


class ToMeEncoder:
    """A loaded timm ViT and its ToMe schedule: decoded frames in, merged tokens out."""

    def __init__(
        self,
        model: nn.Module,
        *,
        model_name: str,
        pretrained: str,
        weights_sha256: str,
        r: tuple[int, ...],
        precision: str,
        batch_size: int,
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.pretrained = pretrained
        self.weights_sha256 = weights_sha256
        self.r = r
        self.precision = precision
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        cfg = model.pretrained_cfg
        self.input_size = int(model.patch_embed.img_size[-1])
        self.resize_size = int(RESIZE_RATIO * self.input_size)
        self.mean = tuple(float(v) for v in cfg["mean"])
        self.std = tuple(float(v) for v in cfg["std"])
        self.width = int(model.embed_dim)
        n_in = model.patch_embed.num_patches + model.num_prefix_tokens
        self.num_tokens = token_schedule(n_in, r)[-1] if r else n_in

    @property
    def random(self) -> bool:
        return self.pretrained == "random"

    def _autocast(self) -> contextlib.AbstractContextManager:
        return precision_autocast(self.device, self.precision)

    def preprocess(self, frames: np.ndarray | Tensor) -> Tensor:
        """uint8 frames (B, H, W, 3) of any size -> normalised pixels (B, 3, S, S), see the module docstring."""
        return preprocess(frames, self.input_size, self.mean, self.std, self.resize_size)

    @torch.inference_mode()
    def encode_pixels(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """Merged tokens (B, K, D) and their sizes (B, K), float32 on the CPU, from normalised pixels."""
        with self._autocast():
            tokens, sizes = tome_forward(self.model, pixels.to(self.device), self.r)
        return tokens.float().cpu(), sizes.float().cpu()

    def encode_frames(self, frames: np.ndarray | Tensor, batch_size: int | None = None) -> Tensor:
        """uint8 frames (B, H, W, 3) of any size -> tokens (B, K, D) float32 (ToMe-14: K = 14, D = 1024)."""
        frames = frames.cpu().numpy() if isinstance(frames, Tensor) else np.asarray(frames)
        crops = [resize_crop(f, self.input_size, self.resize_size) for f in frames]
        s = self.input_size
        return self.encode_crops(np.stack(crops) if crops else np.zeros((0, s, s, 3), np.uint8), batch_size)

    def encode_crops(self, crops: np.ndarray | Tensor, batch_size: int | None = None) -> Tensor:
        """uint8 crops (B, S, S, 3), already resized and cropped as `resize_crop` does (the decode side's
        view, decode/views.py) -> tokens (B, K, D) float32, in passes of one fixed shape (batching.py)."""
        x = crops if isinstance(crops, Tensor) else torch.from_numpy(np.asarray(crops))
        s = self.input_size
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (s, s, 3):
            raise ValueError(f"expected uint8 crops (B, {s}, {s}, 3), got {x.dtype} {tuple(x.shape)}")
        m = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        sd = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        step, out = batch_size or self.batch_size, []
        for chunk in x.split(step):
            n = len(chunk)
            pixels = (chunk.permute(0, 3, 1, 2).float().div(255) - m) / sd  # (B, 3, S, S), as `preprocess`
            out.append(self.encode_pixels(pad_batch(pixels, step))[0][:n])  # one pass shape (batching.py)
        return torch.cat(out) if out else torch.zeros(0, self.num_tokens, self.width)

    def config_dict(self) -> dict:
        """What determines the numbers (no machine-specific paths)."""
        return {
            "name": "timm-tome",
            "timm_version": timm.__version__,
            "model_name": self.model_name,
            "pretrained": self.pretrained,
            "weights_sha256": self.weights_sha256,
            "random": self.random,
            "r": list(self.r),
            "num_tokens": self.num_tokens,
            "width": self.width,
            "preprocess": {
                "resize": f"shorter side {self.resize_size}, PIL bicubic (torchvision Resize on a PIL image)",
                "crop": f"centre {self.input_size}",
                "mean": list(self.mean),
                "std": list(self.std),
            },
            "precision": self.precision,
            "batch_size": self.batch_size,
            "tokens": "final norm on every merged token; class token first, kept set-A then set-B tokens",
        }
