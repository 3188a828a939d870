"""The frozen encoders of one extraction, bundled by feature pack (DESIGN.md §3, §3b; extract/packs.py).

`load_encoders(cfg)` builds every encoder the enabled packs need (library default weights, a local file, the
`--weights-dir` folder, or random initialisation); `encode_videos` turns decoded videos into the store's
`VideoFeatures`: each encoder runs once over the batch on its own view of the frames, whichever packs use it
(VGGish serves avaf and tspm), and each pack takes its arrays from those outputs. The same functions serve
the Ray actors and the in-process path.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from avaf.extract import packs as pack_table
from avaf.extract.config import ExtractConfig
from avaf.extract.decode.backends import DecodedVideo
from avaf.extract.decode.views import View
from avaf.extract.encoders import clip_encoder, tome_encoder, tspm_pack, vggish_encoder
from avaf.extract.encoders.clip_encoder import load_clip
from avaf.extract.encoders.tome_encoder import load_tome
from avaf.extract.encoders.vggish_encoder import EMBEDDING_DIM, load_vggish
from avaf.extract.packs import clip_model_name
from avaf.shared.store import schema
from avaf.shared.store.schema import AVAF, FPS, SAMPLE_RATE, Sets
from avaf.shared.store.sets import TSPM, avaf_set
from avaf.shared.store.writer import VideoFeatures

log = logging.getLogger(__name__)


@dataclass
class Encoders:
    """The loaded encoders of `packs` (by ENCODERS key), their views of the frame, and the seconds each has
    spent encoding in this process (`timings`: wall seconds by encoder name, CPU-seconds of this process by
    `cpu_` + name, and `videos` counted)."""

    packs: tuple[str, ...]
    models: dict[str, object]
    views: dict[str, View]
    prompt_table: dict | None = None  # what --qa-prompts gave the tspm set: file, sha256, rows; None: none
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def clip(self):
        """The avaf pack's CLIP (None without it)."""
        return self.models.get("clip")

    @property
    def image_size(self) -> int:
        """The avaf CLIP's frame side (0 without the avaf pack)."""
        return self.views["clip"].size if "clip" in self.views else 0

    @property
    def device(self) -> str:
        return str(next(iter(self.models.values())).device)

    @property
    def random_weights(self) -> list[str]:
        return sorted(name for name, enc in self.models.items() if enc.random)

    def pack_views(self) -> dict[str, list[list[int]]]:
        return pack_table.pack_views(self.views, self.packs)

    def signature(self) -> dict:
        """What determines the numbers in a store: shards must agree on all of it to be merged. The avaf
        set's keys sit at the top level, as before packs; another pack's under its name (packs.py)."""
        sig = {"fps": FPS, "sample_rate": SAMPLE_RATE, "dtype": str(schema.F16)}
        if AVAF in self.packs:
            clip, vggish = self.models["clip"], self.models["vggish"]
            sig |= {
                "clip": clip.config_dict(),
                "clip_sha256": clip.weights_sha256,
                "vggish": vggish.config_dict(),
                "vggish_sha256": vggish.weights_sha256,
                "image_size": self.image_size,
                # the shape of every pass sets the last bits (batching.py): shards must agree on it
                "pass_size": {"clip_frames": clip.batch_size, "vggish_examples": vggish.batch_size},
            }
        if TSPM in self.packs:
            sig[TSPM] = tspm_pack.signature(self.models, self.views["tome"], self.prompt_table)
        return sig

    def feature_sets(self) -> Sets:
        """The feature sets these encoders write, each array with its encoder and preprocessing."""
        sets: Sets = {}
        if AVAF in self.packs:  # described by the signature, as the store describes a schema-1 file's
            sets[AVAF] = avaf_set(self.signature())
        if TSPM in self.packs:
            sets[TSPM] = tspm_pack.feature_set(self.models, self.views, self.prompt_table)
        return sets


def _device_and_precision(precision: str) -> tuple[str, str]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "auto":
        precision = "fp16" if device == "cuda" else "fp32"
    return device, precision


def load_encoders(
    cfg: ExtractConfig, packs: tuple[str, ...] | None = None, prompt_table: dict | None = None
) -> Encoders:
    """Every frozen encoder of `packs` (default: `--features`) on this process's best device, in eval mode.
    ToMe always runs in fp32: fp16 changes which tokens merge."""
    cfg = pack_table.with_random_weights(cfg)
    packs = packs or pack_table.parse_features(cfg.features)
    device, precision = _device_and_precision(cfg.runtime.precision)
    rt, tspm = cfg.runtime, cfg.tspm
    wd, batch = rt.weights_dir, rt.batch_size
    loaders = {
        "clip": lambda: load_clip(
            clip_model_name(cfg.clip.model), cfg.clip.pretrained, device, precision, weights_dir=wd, batch_size=batch
        ),
        # batch 4x (256) padded a 60 s video's 60 examples to 256: 3.5 s instead of 0.9
        "vggish": lambda: load_vggish(cfg.vggish.weights, device, precision, weights_dir=wd, batch_size=batch),
        "tspm_clip": lambda: load_clip(
            clip_model_name(tspm.clip_model), tspm.clip_weights, device, precision, weights_dir=wd,
            batch_size=tspm.clip_batch_size,
        ),
        "tome": lambda: load_tome(
            tspm.tome_weights, device, "fp32", model_kwargs=tspm.tome_model_kwargs, weights_dir=wd,
            batch_size=tspm.tome_batch_size,
        ),
    }  # fmt: skip
    models = {name: loaders[name]() for name in pack_table.encoders_of(packs)}
    views = pack_table.encoder_views(cfg, packs)
    for name, view in views.items():
        _check_view(name, models[name], view)
    enc = Encoders(packs, models, views, prompt_table if TSPM in packs else None)
    if enc.random_weights:
        log.warning(
            "RANDOM WEIGHTS for %s: features are meaningless, for tests and smoke runs only "
            "(recorded in the output file)",
            ", ".join(enc.random_weights),
        )
    return enc


def _check_view(name: str, model, view: View) -> None:
    """The loaded model takes the view the decode side was told to make (from the config alone)."""
    size = model.input_size if name == "tome" else model.image_size
    if size != view.size:
        raise ValueError(f"{name}: the model takes {size} px frames, its config said {view.size}")


def find_weights(cfg: ExtractConfig) -> None:
    """Find every encoder's weights as `load_encoders` will, loading nothing: a missing file stops a run in
    one line before any other work."""
    cfg = pack_table.with_random_weights(cfg)
    encoders, wd = pack_table.encoders_of(pack_table.parse_features(cfg.features)), cfg.runtime.weights_dir
    if "clip" in encoders:
        clip_encoder.find_weights(clip_model_name(cfg.clip.model), cfg.clip.pretrained, wd)
    if "vggish" in encoders:
        vggish_encoder.find_weights(cfg.vggish.weights, wd)
    if "tspm_clip" in encoders:
        clip_encoder.find_weights(clip_model_name(cfg.tspm.clip_model), cfg.tspm.clip_weights, wd)
    if "tome" in encoders:
        tome_encoder.find_weights(cfg.tspm.tome_weights, wd)


def encode_videos(
    enc: Encoders, items: list[tuple[str, str, DecodedVideo]], packs: tuple[str, ...] | None = None
) -> list[VideoFeatures]:
    """Encode several decoded videos for `packs` (default: all of `enc`'s): each frame encoder over each
    video's frames in fixed-shape passes of their own (`_each_video`), VGGish over all their seconds."""
    packs = packs or enc.packs
    out = {}
    for name in pack_table.encoders_of(packs):
        start, cpu = time.perf_counter(), time.process_time()  # CPU: this process's threads (torch's)
        out[name] = _RUN[name](enc.models[name], enc.views.get(name), items)
        enc.timings[name] = enc.timings.get(name, 0.0) + time.perf_counter() - start
        enc.timings[f"cpu_{name}"] = enc.timings.get(f"cpu_{name}", 0.0) + time.process_time() - cpu
    enc.timings["videos"] = enc.timings.get("videos", 0) + len(items)
    return [_features(vid, path, d, packs, out, i) for i, (vid, path, d) in enumerate(items)]


def _features(vid: str, path: str, d: DecodedVideo, packs, out: dict, i: int) -> VideoFeatures:
    """One video's arrays for `packs` from the encoders' outputs `out` (encoder -> per-video outputs)."""
    avaf = AVAF in packs
    sets = {TSPM: tspm_pack.video_arrays(out, i)} if TSPM in packs else {}
    return VideoFeatures(
        video_id=vid,
        source_path=path,
        visual_tokens=out["clip"][i][0] if avaf else None,
        visual_pooled=out["clip"][i][1] if avaf else None,
        audio=out["vggish"][i] if avaf else None,
        audio_valid=d.audio_valid,
        timestamp=d.timestamps,
        source_size=os.path.getsize(path),
        duration=d.duration,
        has_audio=d.has_audio,
        decoder=d.decoder,
        streams=d.streams,
        sets=sets,
    )


def _each_video(items, view: View, device, encode) -> list:
    """`encode` on each video's frames of `view`, one video at a time: its passes start at row 0 and are
    padded by the encoder itself, as when it is encoded alone (on an AVX2-only CPU a frame's bits moved with
    its place in a pass and with what else filled it). An audio-only file has no frames: `encode` gives it
    none. A GPU decoder's frames stay tensors on `device`."""
    out = []
    for _, _, d in items:
        frames = d.views[view] if d.views else d.frames
        if not isinstance(frames, np.ndarray):
            import torch

            frames = torch.as_tensor(frames).to(device)
        out.append(encode(frames))
    return out


def _f16(x, d: DecodedVideo) -> np.ndarray:
    """One video's rows as float16; T rows of zeros for an audio-only file (no frames, so no rows)."""
    x = x.numpy().astype(np.float16)
    return x if len(x) == d.num_seconds else np.zeros((d.num_seconds, *x.shape[1:]), np.float16)


def _run_clip(clip, view: View, items) -> list[tuple[np.ndarray, np.ndarray]]:
    done = _each_video(items, view, clip.device, clip.encode_images)  # (T, N, D), (T, D) each
    return [(_f16(t, d), _f16(p, d)) for (t, p), (_, _, d) in zip(done, items, strict=True)]


def _run_vggish(vggish, _view, items) -> list[np.ndarray]:
    """(T, 128) float16 per video. Only the seconds with audio go through VGGish (none for a video without
    an audio track): the others are stored as zeros, flagged by audio_valid, so encoding them was waste. A
    second's example depends on its own samples and passes have one shape (batching.py), so the encoded rows
    have the same bits as when every second was encoded (tests/test_stage.py)."""
    valid = [np.asarray(d.audio_valid, bool) for _, _, d in items]
    with_audio = [i for i, v in enumerate(valid) if v.any()]
    audio = [items[i][2].audio[valid[i]] for i in with_audio]  # (T', 16000) each
    encoded = vggish.encode_batch(audio, [len(a) for a in audio]) if audio else []
    out = [np.zeros((d.num_seconds, EMBEDDING_DIM), np.float16) for _, _, d in items]
    for i, au in zip(with_audio, encoded, strict=True):
        out[i][valid[i]] = au.numpy().astype(np.float16)
    return out


def _run_tspm_clip(clip, view: View, items) -> list[np.ndarray]:
    def pooled(frames):  # frames already view-sized
        return clip.encode_pooled(frames if isinstance(frames, np.ndarray) else frames.cpu().numpy())

    done = _each_video(items, view, clip.device, pooled)  # (T, D) each
    return [_f16(r, d) for r, (_, _, d) in zip(done, items, strict=True)]


def _run_tome(tome, view: View, items) -> list[np.ndarray]:
    done = _each_video(items, view, tome.device, tome.encode_crops)  # (T, K, D) each
    return [_f16(r, d) for r, (_, _, d) in zip(done, items, strict=True)]


_RUN = {"clip": _run_clip, "vggish": _run_vggish, "tspm_clip": _run_tspm_clip, "tome": _run_tome}
