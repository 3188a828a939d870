"""Frozen CLIP encoders: all image tokens of an open_clip ViT, and word + sentence features of its text tower.

DESIGN.md §2 (visual tokens `[T, N, D]`, pooled `[T, D]`, words `[L, D]`, sentence `[D]`) and §3 "Encoders".

Image tokens: `ln_post` output for every token (a forward hook; open_clip's `output_tokens=True` gives only
the unprojected patches) times `proj`: CLS first, then the patch grid row-major. ViT-B/32 at 224²: (B, 50, 512),
token 0 == `model.encode_image`. Only CLS-pooled ViTs (`pool_type='tok'`, `ln_post` before pooling, no
attentional pooler) have that identity; CLIPA (avg pool), CoCa, timm and ResNet towers are refused.

Text: words = `ln_final` + `text_projection` output of every real BPE token, start and end tokens included
(L = BPE tokens + 2 <= context length 77; open_clip's tokenizer truncates and keeps the end token last).
Sentence = the end token's output = `model.encode_text` = words[-1]; never the start token (same for all).

The `tspm` pack's layout (TSPM, QA-TIGER, AV-Master read OpenAI ViT-L/14@336: `load_clip("ViT-L-14-336",
"openai")`): `encode_pooled` gives the pooled, projected image embedding (B, D) from decoded frames of any
size, each resized and cropped from the frame itself as open_clip's preprocess does; `encode_text_padded`
gives all C = 77 positions times `text_projection`, padding included (AV-Master's `[1, 77, 768]` word files),
and the sentence as the end token's row.

QuickGELU (OpenAI's weights need it; nn.GELU gives silently wrong features): a tag follows open_clip's tag
table (True for "openai"); a local file follows the `weights.json` of `fetch_default_weights`, else True if
the model name ends in `-quickgelu` or the file name contains "openai"/"quickgelu", else nn.GELU with a
warning. `quick_gelu=True/False` overrides all of this.

    enc = load_clip("ViT-B-32", "openai", device="cuda", precision="fp16")
    tokens, pooled = enc.encode_images(frames)          # frames: uint8 (B, 224, 224, 3)
    [(words, sentence)] = enc.encode_text(["What is the first instrument that sounds?"])
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.transformer import TextTransformer
from torch import Tensor, nn

from avaf.extract.decode.sampling import clip_resize
from avaf.extract.encoders.batching import TEXT_ROWS, pad_batch, text_passes
from avaf.extract.encoders.weights import (
    OFFLINE_FIX,
    WeightsFileError,
    WeightsUnavailable,
    check_precision,
    clip_weights_filename,
    hub_offline_unless_reachable,
    is_torchscript,
    no_network_error,
    precision_autocast,
    read_manifest,
    skip_init,
    state_dict_sha256,
)

log = logging.getLogger(__name__)


@dataclass
class _Source:
    """Where the weights come from: kind "random", "tag" (open_clip pretrained tag) or "file"."""

    kind: str
    path: Path | None = None
    tag_cfg: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)


def load_clip(
    model_name: str = "ViT-B-32",
    pretrained: str = "openai",
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    *,
    weights_dir: str | os.PathLike | None = None,
    quick_gelu: bool | None = None,
    batch_size: int = 64,
    seed: int = 0,
) -> ClipEncoder:
    """An open_clip model in eval mode, ready to encode frames and questions.

    pretrained: an open_clip tag ("openai", "laion2b_s34b_b79k", ...), a local .safetensors/.bin/.pt state
    dict, or "random" (random initialisation from `seed`, for tests and offline smoke runs). With
    `weights_dir`, a tag is read from the folder filled by `fetch_default_weights` and never downloaded.
    precision: "fp32", or "fp16"/"bf16" autocast (the weights stay fp32; outputs are always fp32).
    """
    check_precision(precision)
    _check_architecture(model_name)
    source = _resolve_source(model_name, pretrained, weights_dir)
    qg = _resolve_quick_gelu(model_name, pretrained, source, quick_gelu)
    model = _build(model_name, source, qg, seed)
    sha = state_dict_sha256(model.state_dict())  # fp32, as loaded, before moving to the device
    mean = source.tag_cfg.get("mean") or source.manifest.get("mean") or model.visual.image_mean
    std = source.tag_cfg.get("std") or source.manifest.get("std") or model.visual.image_std
    model = model.to(device).eval().requires_grad_(False)
    label = pretrained if source.kind != "file" else source.path.name
    log.info("CLIP %s (%s): quick_gelu=%s sha256=%s", model_name, label, qg, sha[:12])
    return ClipEncoder(
        model,
        model_name=model_name,
        pretrained=label,
        weights_file=source.path,
        weights_sha256=sha,
        quick_gelu=qg,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        precision=precision,
        batch_size=batch_size,
    )


def input_size(model_name: str) -> int:
    """The image side `model_name` takes (what `ClipEncoder.image_size` will be), from its open_clip config,
    without building the model: decoding can start while the weights load elsewhere."""
    _check_architecture(model_name)
    size = open_clip.get_model_config(model_name)["vision_cfg"].get("image_size", 224)  # CLIPVisionCfg's
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _check_architecture(model_name: str) -> None:
    """Refuse, before building anything, towers whose token 0 is not the pooled embedding."""
    if ":" in model_name:
        raise ValueError(
            f"{model_name!r}: use an open_clip model name with a pretrained tag or file, not a schema"
        )
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(
            f"unknown open_clip model {model_name!r}; known: {', '.join(open_clip.list_models())}"
        )
    v = cfg["vision_cfg"]
    if v.get("timm_model_name") or isinstance(v.get("layers"), (list, tuple)):
        raise ValueError(
            f"{model_name}: a timm or ResNet image tower has no CLS + patch token grid; "
            "use one of open_clip's own ViTs (e.g. ViT-B-32, ViT-B-16, ViT-L-14)"
        )
    pool, ln_after, attn = (
        v.get("pool_type", "tok"),
        v.get("final_ln_after_pool", False),
        v.get("attentional_pool"),
    )
    if pool != "tok" or ln_after or attn:
        raise ValueError(
            f"{model_name}: image tower pools with pool_type={pool!r}, final_ln_after_pool={ln_after}, "
            f"attentional_pool={attn!r}; only CLS-pooled ViTs (pool_type='tok') give tokens whose token 0 "
            "is the pooled embedding"
        )


def find_weights(
    model_name: str, pretrained: str, weights_dir: str | os.PathLike | None = None
) -> Path | None:
    """The checkpoint `load_clip` will read (None: random), found as it finds it (a tag is downloaded if it
    must be), nothing loaded: a missing file raises its one-line fix before any other work."""
    return _resolve_source(model_name, pretrained, weights_dir).path


def _resolve_source(model_name: str, pretrained: str, weights_dir: str | os.PathLike | None) -> _Source:
    if pretrained == "random":
        return _Source("random")
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if tag_cfg:
        if weights_dir is not None:
            path = Path(weights_dir) / clip_weights_filename(model_name, pretrained)
            if not path.is_file():
                have = (
                    sorted(p.name for p in Path(weights_dir).glob("*")) if Path(weights_dir).is_dir() else []
                )
                raise WeightsUnavailable(
                    f"{path} not found: the weights folder {weights_dir} has no {model_name} {pretrained!r} "
                    f"checkpoint (it holds: {', '.join(have) or 'nothing'}). {OFFLINE_FIX}"
                )
            return _Source("tag", path, tag_cfg, read_manifest(weights_dir).get(path.name, {}))
        try:
            with hub_offline_unless_reachable():
                path = Path(open_clip.download_pretrained(tag_cfg))
        except Exception as e:  # open_clip raises RuntimeError / FileNotFoundError / hub errors offline
            raise no_network_error(f"open_clip {model_name} {pretrained!r}", ["open_clip's cache"], e) from e
        return _Source("tag", path, tag_cfg)
    path = Path(pretrained).expanduser()
    if path.is_file():
        return _Source("file", path, {}, read_manifest(path.parent).get(path.name, {}))
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    raise ValueError(
        f"pretrained={pretrained!r} is neither an open_clip tag of {model_name} ({', '.join(tags) or 'none'}), "
        "nor an existing file, nor 'random'"
    )


def _resolve_quick_gelu(model_name: str, pretrained: str, source: _Source, flag: bool | None) -> bool:
    """QuickGELU as the weights were trained (see the module docstring); `flag` overrides, with a warning."""
    by_name = bool(open_clip.get_model_config(model_name).get("quick_gelu", False))
    if source.tag_cfg:
        expected, why = (
            by_name or bool(source.tag_cfg.get("quick_gelu", False)),
            f"open_clip tag {pretrained!r}",
        )
    elif "quick_gelu" in source.manifest:
        expected, why = bool(source.manifest["quick_gelu"]), "weights.json"
    elif source.kind == "file":
        name = source.path.name.lower()
        expected, why = by_name or "openai" in name or "quickgelu" in name, "model and file name"
        if not expected and flag is None:
            log.warning(
                "%s: assuming nn.GELU; pass quick_gelu=True for OpenAI-trained weights, or features are wrong",
                source.path,
            )
    else:
        expected, why = by_name, "model name"
    if flag is None:
        return expected
    if flag != expected and source.kind != "random":
        log.warning("quick_gelu=%s overrides %s (which implies %s)", flag, why, expected)
    return flag


def _build(model_name: str, source: _Source, quick_gelu: bool, seed: int) -> nn.Module:
    """Build the model in fp32 on the CPU and load the weights (random init is seeded, hence reproducible)."""
    path = source.path
    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)
    if is_torchscript(path):
        raise WeightsFileError(
            f"{path} is a TorchScript archive (OpenAI's original .pt format), which avaf does not unpickle. "
            "Convert it once with avaf.extract.encoders.weights.convert_torchscript_checkpoint(src, dst.safetensors), "
            "or use the safetensors file written by `fetch_default_weights`."
        )
    try:
        with skip_init():  # open_clip loads strictly: every persistent tensor is overwritten
            return open_clip.create_model(model_name, pretrained=str(path), force_quick_gelu=quick_gelu)
    except Exception as e:
        raise WeightsFileError(
            f"{path} cannot be loaded into open_clip {model_name!r} (wrong architecture or not a "
            f"state dict?): {type(e).__name__}: {' '.join(str(e).split())[:600]}"
        ) from e


def _project(x: Tensor, proj: Tensor | nn.Module | None) -> Tensor:
    """open_clip's text projection: a matrix, a Linear (with bias), or none."""
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Module) else x @ proj


class ClipEncoder:
    """A loaded open_clip model and the conventions of its outputs (see the module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        model_name: str,
        pretrained: str,
        weights_file: Path | None,
        weights_sha256: str,
        quick_gelu: bool,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        precision: str,
        batch_size: int,
    ) -> None:
        self.model = model
        self.model_name = model_name
        self.pretrained = pretrained
        self.weights_file = weights_file
        self.weights_sha256 = weights_sha256
        self.quick_gelu = quick_gelu
        self.mean, self.std = mean, std
        self.precision = precision
        self.batch_size = batch_size
        visual = model.visual
        self.device = next(model.parameters()).device
        self.image_size = int(visual.image_size[0])
        self.patch_size = int(visual.patch_size[0])
        self.grid = tuple(int(g) for g in visual.grid_size)
        self.num_tokens = 1 + self.grid[0] * self.grid[1]
        self.width = (
            int(visual.proj.shape[1]) if visual.proj is not None else int(visual.ln_post.weight.shape[0])
        )
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)
        self._tokenizer = None

    @property
    def random(self) -> bool:
        return self.pretrained == "random"

    def _autocast(self) -> contextlib.AbstractContextManager:
        return precision_autocast(self.device, self.precision)

    @torch.inference_mode()
    def encode_images(
        self, frames: np.ndarray | Tensor, batch_size: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """tokens (B, 1 + P, D) and pooled (B, D), float32 on the CPU, from uint8 frames (B, S, S, 3).

        Frames must already be resized (shorter side to S, PIL bicubic) and centre-cropped, as CLIP's
        preprocess does; this only scales to [0, 1] and normalises with the model's mean and std.
        """
        frames = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, Tensor) else frames
        s = self.image_size
        if frames.dtype != torch.uint8 or frames.ndim != 4 or tuple(frames.shape[1:]) != (s, s, 3):
            raise ValueError(
                f"expected uint8 frames (B, {s}, {s}, 3), got {frames.dtype} {tuple(frames.shape)}"
            )
        if len(frames) == 0:
            return torch.zeros(0, self.num_tokens, self.width), torch.zeros(0, self.width)
        step, tokens = batch_size or self.batch_size, []
        for chunk in frames.split(step):
            n = len(chunk)
            chunk = pad_batch(chunk, step)  # (step, S, S, 3): every pass has the same shape (module doc)
            x = chunk.to(self.device).permute(0, 3, 1, 2).float().div_(255)  # (B, 3, S, S)
            x = x.sub_(self._mean).div_(self._std)  # in place: the same bits, no two more float copies
            tokens.append(self._encode_pixels(x)[:n].float().cpu())
        tokens = torch.cat(tokens)  # (B, 1 + P, D)
        return tokens, tokens[:, 0].clone()  # token 0 is the pooled embedding: one computation, same bits

    def _encode_pixels(self, pixels: Tensor) -> Tensor:
        """One forward pass of the image tower; the hook keeps `ln_post`'s output for all tokens."""
        visual = self.model.visual
        kept = []
        handle = visual.ln_post.register_forward_hook(lambda mod, inp, out: kept.append(out))
        try:
            with self._autocast():
                visual(pixels)
                x = kept[0]  # (B, 1 + P, W)
                tokens = x @ visual.proj if visual.proj is not None else x  # (B, 1 + P, D)
        finally:
            handle.remove()
        if x.ndim != 3 or x.shape[1] != self.num_tokens:
            raise RuntimeError(f"ln_post saw {tuple(x.shape)}, expected (B, {self.num_tokens}, W)")
        return tokens

    def preprocess(self, frames: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """uint8 (B, S, S, 3) from uint8 frames (H, W, 3) of any size: shorter side to S (PIL bicubic), centre
        crop, as open_clip's preprocess does before it normalises; a frame already S x S is kept as it is."""
        s, out = self.image_size, []
        for i, f in enumerate(frames):
            f = np.asarray(f)
            if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
                raise ValueError(f"frame {i}: expected uint8 (H, W, 3), got {f.dtype} {f.shape}")
            out.append(f if f.shape[:2] == (s, s) else clip_resize(f, s))
        return np.stack(out) if out else np.zeros((0, s, s, 3), np.uint8)

    @torch.inference_mode()
    def encode_pooled(self, frames: np.ndarray | list[np.ndarray], batch_size: int | None = None) -> Tensor:
        """The image tower's pooled, projected output (B, D) (`model.encode_image`), float32 on the CPU, from
        uint8 frames (H, W, 3) of any size (`preprocess`), in passes of one fixed shape like `encode_images`."""
        x = torch.from_numpy(self.preprocess(frames))  # (B, S, S, 3)
        step, pooled = batch_size or self.batch_size, []
        for chunk in x.split(step):
            n = len(chunk)
            pixels = pad_batch(chunk, step).to(self.device).permute(0, 3, 1, 2).float().div_(255)
            with self._autocast():
                out = self.model.visual(pixels.sub_(self._mean).div_(self._std))  # (step, D)
            pooled.append(out[:n].float().cpu())
        return torch.cat(pooled) if pooled else torch.zeros(0, self.width)

    def tokenize(self, texts: list[str]) -> Tensor:
        """BPE ids (B, context_length) with open_clip's tokenizer for this model, zero-padded."""
        if self._tokenizer is None:
            self._tokenizer = open_clip.get_tokenizer(self.model_name)
        return self._tokenizer(list(texts), context_length=self._text_parts()[4])

    def _text_parts(self) -> tuple[nn.Module, Tensor | nn.Module | None, str, int | None, int]:
        """ln_final, text_projection, pool type, eos id and context length of the text tower."""
        m = self.model
        text = getattr(m, "text", None)
        if text is None:  # open_clip.CLIP keeps the text tower's modules on the model itself
            parts = (m.ln_final, m.text_projection, getattr(m, "text_pool_type", "argmax"))
            parts += (getattr(m, "text_eos_id", None), m.context_length)
        elif isinstance(text, TextTransformer) and text.cls_emb is None:
            parts = (text.ln_final, text.text_projection, text.pool_type, text.eos_id, text.context_length)
        else:
            raise ValueError(f"{self.model_name}: word features need open_clip's own causal text transformer")
        if parts[2] not in ("argmax", "eos"):
            raise ValueError(f"{self.model_name}: text pool_type {parts[2]!r} is not an end-of-text token")
        return parts

    @torch.inference_mode()
    def encode_text(self, texts: list[str]) -> list[tuple[Tensor, Tensor]]:
        """Per text: word features (L, D) for SOT, the BPE tokens and EOT, and the sentence feature (D,).
        Passes of a fixed shape (batching.text_passes): a text's features do not depend on the others."""
        ln_final, proj, pool, eos_id, _ = self._text_parts()
        texts = list(texts)
        if not texts:
            return []
        ids = self.tokenize(texts).to(self.device)  # (Q, C)
        # the end token, found exactly as open_clip pools: the largest id, or the first eos id
        end = ids.argmax(dim=-1) if pool == "argmax" else (ids == eos_id).int().argmax(dim=-1)  # (Q,)
        trim = self._can_trim()
        out: list = [None] * len(texts)
        for rows, n in text_passes(end.cpu(), ids.shape[1], trim):
            part, part_end = pad_batch(ids[rows, :n], TEXT_ROWS), pad_batch(end[rows], TEXT_ROWS)
            with self._autocast():
                if trim:
                    words, sentence = self._encode_trimmed(part, part_end, proj)  # (R, n, D), (R, D)
                else:
                    words, sentence = self._encode_hooked(part, ln_final, proj)  # (R, C, D), (R, D)
            words, sentence = words.float().cpu(), sentence.float().cpu()
            for j, (i, e) in enumerate(zip(rows.tolist(), end[rows].tolist(), strict=True)):
                out[i] = (words[j, : e + 1].clone(), sentence[j].clone())
        return out

    def _can_trim(self) -> bool:
        m = self.model
        return (
            getattr(m, "text", None) is None
            and m.attn_mask is not None
            and getattr(m.transformer, "batch_first", False)
        )

    def _encode_trimmed(
        self, ids: Tensor, end: Tensor, proj: Tensor | nn.Module | None
    ) -> tuple[Tensor, Tensor]:
        """`CLIP.encode_text` on the first n = ids.shape[1] positions only: with the causal mask, the outputs
        there do not depend on the padding after them, so this equals the full pass (tested) at ~77/n the
        speed."""
        m, n = self.model, ids.shape[1]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(ids[:, :n]).to(cast) + m.positional_embedding[:n].to(cast)  # (B, n, W)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask[:n, :n]))
        words = _project(x, proj)  # (B, n, D)
        return words, words[torch.arange(len(ids), device=ids.device), end]

    def _encode_hooked(
        self, ids: Tensor, ln_final: nn.Module, proj: Tensor | nn.Module | None
    ) -> tuple[Tensor, Tensor]:
        """`model.encode_text`, keeping `ln_final`'s output for every position and projecting it too."""
        kept = []
        handle = ln_final.register_forward_hook(lambda mod, inp, out: kept.append(out))
        try:
            sentence = self.model.encode_text(ids)  # (B, D)
        finally:
            handle.remove()
        return _project(kept[0], proj), sentence  # (B, C, D), (B, D)

    @torch.inference_mode()
    def encode_text_padded(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """words (B, C, D): `ln_final` output times `text_projection` at every one of the C context positions,
        padding included; sentence (B, D): the end token's row of words (== `model.encode_text`). float32, CPU.
        Passes of TEXT_ROWS x C, padded: a text's features do not depend on the others."""
        ln_final, proj, pool, eos_id, context = self._text_parts()
        texts, words, ends = list(texts), [], []
        for a in range(0, len(texts), TEXT_ROWS):
            ids = self.tokenize(texts[a : a + TEXT_ROWS]).to(self.device)  # (B, C)
            ends.append(ids.argmax(dim=-1) if pool == "argmax" else (ids == eos_id).int().argmax(dim=-1))
            with self._autocast():
                out = self._encode_hooked(pad_batch(ids, TEXT_ROWS), ln_final, proj)[0]  # (TEXT_ROWS, C, D)
            words.append(out[: len(ids)].float().cpu())
        if not words:
            width = _project(torch.zeros(1, ln_final.weight.shape[0]), proj).shape[-1]
            return torch.zeros(0, context, width), torch.zeros(0, width)
        words, end = torch.cat(words), torch.cat(ends).cpu()  # (B, C, D), (B,)
        return words, words[torch.arange(len(words)), end].clone()

    def config_dict(self) -> dict:
        """What determines the numbers (no machine-specific paths: shards from different nodes must agree)."""
        return {
            "name": "open_clip",
            "open_clip_version": open_clip.__version__,
            "model_name": self.model_name,
            "pretrained": self.pretrained,
            "weights_sha256": self.weights_sha256,
            "random": self.random,
            "quick_gelu": self.quick_gelu,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_tokens": self.num_tokens,
            "width": self.width,
            "mean": list(self.mean),
            "std": list(self.std),
            "precision": self.precision,
            "context_length": int(getattr(getattr(self.model, "text", self.model), "context_length", 0)),
            "tokens": "CLS then patches (row-major), ln_post and proj on every token; token 0 == pooled",
            "words": "SOT, BPE tokens, EOT (L <= context_length); sentence = EOT output == encode_text",
        }
