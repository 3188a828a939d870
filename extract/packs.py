"""Feature packs: what `avaf-extract --features avaf,tspm` writes, with which encoders (docs/extraction.md,
"Feature packs"; DESIGN.md §3b).

A pack writes the feature set of its name. Its encoders run once per batch of videos whichever packs share
them (VGGish serves both), each on its own view of the decoded frame (decode/views.py):

    pack  encoder    model (default weights)                      view of the frame      arrays
    avaf  clip       open_clip ViT-B-32 (openai)                  224 (CLIP's)           visual_tokens, visual_pooled, sentence, words
          vggish     torchvggish VGGish (release 10086976)        -                      audio
    tspm  vggish     the same VGGish, encoded once                -                      audio
          tspm_clip  open_clip ViT-L-14-336 (openai, QuickGELU)   336 (CLIP's)           frame, sentence, words, prompt
          tome       timm vit_large_patch16_384, ToMe r=25 x 23   438 -> crop 384        tome

The table is data: `PACKS`, `ENCODERS`; this module imports neither torch, PyAV nor an encoder library at
import (the CLI checks `--features` with it before any work). `signature_of_set` reads one set's part of a run's
signature, so a store can gain a pack when its other sets were made with the same settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from avaf.shared.store.schema import AVAF
from avaf.shared.store.sets import TSPM

if TYPE_CHECKING:
    from avaf.extract.config import ExtractConfig
    from avaf.extract.decode.views import View

COMMON = ("fps", "sample_rate", "dtype")  # signature keys every set shares (at the top level)


@dataclass(frozen=True)
class Pack:
    """A named feature set and the encoders that write it (keys of ENCODERS, in the order they run)."""

    name: str
    encoders: tuple[str, ...]
    consumers: str  # who reads it


PACKS: dict[str, Pack] = {
    AVAF: Pack(AVAF, ("clip", "vggish"), "AVAF-Net, PSTP-Net"),
    TSPM: Pack(TSPM, ("vggish", "tspm_clip", "tome"), "TSPM, QA-TIGER, AV-Master, STG, QAST"),
}
ENCODERS = ("clip", "vggish", "tspm_clip", "tome")  # every encoder, in the order a batch runs them


def parse_features(text: str | tuple[str, ...]) -> tuple[str, ...]:
    """The packs of a `--features` comma list, in table order; ValueError naming an unknown one and the
    known packs (one line)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in PACKS]
    if unknown or not names:
        what = f"unknown feature pack {', '.join(repr(n) for n in unknown)}" if unknown else "no feature pack"
        raise ValueError(f"--features: {what}; known packs: {', '.join(PACKS)}")
    return tuple(p for p in PACKS if p in names)


def encoders_of(packs: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The encoders the packs need, each once, in run order."""
    wanted = {e for p in packs for e in PACKS[p].encoders}
    return tuple(e for e in ENCODERS if e in wanted)


def with_random_weights(cfg: ExtractConfig) -> ExtractConfig:
    """`cfg` with every encoder of every pack on random weights when `runtime.random_weights` is set."""
    if not cfg.runtime.random_weights:
        return cfg
    return replace(
        cfg,
        clip=replace(cfg.clip, pretrained="random"),
        vggish=replace(cfg.vggish, weights="random"),
        tspm=replace(cfg.tspm, clip_weights="random", tome_weights="random"),
    )


def encoder_views(cfg: ExtractConfig, packs: tuple[str, ...]) -> dict[str, View]:
    """Each visual encoder's view of the frame, from the config alone (no weights loaded): what the decode
    side makes while the encoders load elsewhere."""
    from avaf.extract.decode.views import View
    from avaf.extract.encoders.clip_encoder import input_size

    views = {}
    encoders = encoders_of(packs)
    if "clip" in encoders:
        size = input_size(clip_model_name(cfg.clip.model))
        if cfg.decode.image_size not in (None, size):
            raise ValueError(
                f"decode.image_size {cfg.decode.image_size} differs from {cfg.clip.model}'s input size {size}"
            )
        views["clip"] = View(size)
    if "tspm_clip" in encoders:
        views["tspm_clip"] = View(input_size(clip_model_name(cfg.tspm.clip_model)))
    if "tome" in encoders:
        views["tome"] = tome_view(cfg.tspm.tome_model_kwargs)
    return views


def clip_model_name(model: str) -> str:
    """An open_clip model name; a path to a model-config JSON is registered first (custom or tiny models)."""
    if model.endswith(".json") and os.path.isfile(model):
        import open_clip

        open_clip.add_model_config(model)
        return os.path.splitext(os.path.basename(model))[0]
    return model


def tome_view(model_kwargs: dict) -> View:
    """ToMe's input: TSPM's Resize(int(256 / 224 * S)) and CenterCrop(S), S the ViT's image size."""
    from avaf.extract.decode.views import View
    from avaf.extract.encoders.tome_encoder import MODEL_NAME, RESIZE_RATIO

    size = model_kwargs.get("img_size")
    if size is None:
        import timm

        size = timm.models.get_pretrained_cfg(MODEL_NAME).input_size[-1]
    size = int(size[-1] if isinstance(size, (list, tuple)) else size)
    return View(size, int(RESIZE_RATIO * size))


def config_views(cfg: ExtractConfig) -> dict[str, list[list[int]]]:
    """The views of every pack of `cfg.features`, from the config alone (`pack_views` of `encoder_views`):
    what decode tasks make while the encoders load elsewhere (the Ray engine's decode config)."""
    packs = parse_features(cfg.features)
    return pack_views(encoder_views(with_random_weights(cfg), packs), packs)


def pack_views(encoder_view: dict[str, View], packs: tuple[str, ...]) -> dict[str, list[list[int]]]:
    """{pack: [[size, resize], ...]}: the views each pack's encoders take, as the decode config carries them
    (decode.worker.frame_views)."""
    return {
        p: [[v.size, v.resize] for e in PACKS[p].encoders if (v := encoder_view.get(e)) is not None]
        for p in packs
    }


def weights_files(cfg: ExtractConfig) -> list[tuple[str, str, str]]:
    """(pack, encoder, the file it reads in --weights-dir) for every encoder of every pack: what
    `avaf-fetch-weights --list` prints. A local file or 'random' is said as such."""
    from avaf.extract.encoders.tome_encoder import MODEL_NAME, default_tag, tome_weights_filename
    from avaf.extract.encoders.weights import VGGISH_FILENAME, clip_weights_filename

    def clip_file(model: str, pretrained: str) -> str:
        if pretrained == "random" or "." in pretrained or "/" in pretrained:
            return f"none: {pretrained}"
        return clip_weights_filename(clip_model_name(model), pretrained)

    tome = cfg.tspm.tome_weights
    files = {
        "clip": clip_file(cfg.clip.model, cfg.clip.pretrained),
        "vggish": VGGISH_FILENAME if cfg.vggish.weights == "default" else f"none: {cfg.vggish.weights}",
        "tspm_clip": clip_file(cfg.tspm.clip_model, cfg.tspm.clip_weights),
        "tome": f"none: {tome}"
        if tome == "random" or tome.endswith(".safetensors")
        else tome_weights_filename(MODEL_NAME, default_tag() if tome == "default" else tome),
    }
    return [(p, e, files[e]) for p in PACKS for e in PACKS[p].encoders]


def fetch_pack_weights(
    folder: str, cfg: ExtractConfig, packs: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, str]]:
    """Download the default weights of the packs' encoders into `folder` (needs network; files already
    there are kept), under the names `weights_files` lists: ({encoder: path} of the files in place,
    {encoder: why it is not, and how to place it by hand}). An unreachable host fails at once
    (`weights.fetch`)."""
    from avaf.extract.encoders.tome_encoder import weights_file as tome_weights_file
    from avaf.extract.encoders.weights import clip_weights_file, fetch, vggish_weights_file

    encoders, files = encoders_of(packs), {}
    if "clip" in encoders:
        files["clip"] = clip_weights_file(folder, cfg.clip.model, cfg.clip.pretrained)
    if "vggish" in encoders:
        files["vggish"] = vggish_weights_file(folder)
    if "tspm_clip" in encoders:
        files["tspm_clip"] = clip_weights_file(folder, cfg.tspm.clip_model, cfg.tspm.clip_weights)
    if "tome" in encoders:
        files["tome"] = tome_weights_file(folder, cfg.tspm.tome_weights)
    done, failed = fetch(files)
    return {k: str(v) for k, v in done.items()}, failed


def signature_of_set(signature: dict, set_name: str) -> dict:
    """One set's part of a run's signature (`Encoders.signature`): the avaf set's keys sit at the top level
    (as before packs existed, so older stores still match), another pack's under its name."""
    if set_name == AVAF:
        return {k: v for k, v in signature.items() if k not in PACKS}
    return {k: signature[k] for k in COMMON if k in signature} | signature.get(set_name, {})
