"""The frozen encoders of one extraction, bundled: CLIP ViT tokens and VGGish audio (DESIGN.md §3).

`load_encoders(cfg)` builds both from the config (library default weights, a local file, the
`--weights-dir` folder, or random initialisation); `encode_video` turns one decoded video into the
store's `VideoFeatures`. The same functions serve the Ray actors and the in-process path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from avaf.extract.config import ExtractConfig
from avaf.extract.decode.backends import DecodedVideo
from avaf.extract.encoders import clip_encoder, vggish_encoder
from avaf.extract.encoders.clip_encoder import ClipEncoder, input_size, load_clip
from avaf.extract.encoders.vggish_encoder import VGGishEncoder, load_vggish
from avaf.shared.store import schema
from avaf.shared.store.schema import AVAF, FPS, SAMPLE_RATE, Sets
from avaf.shared.store.sets import avaf_set
from avaf.shared.store.writer import VideoFeatures

log = logging.getLogger(__name__)


@dataclass
class Encoders:
    clip: ClipEncoder
    vggish: VGGishEncoder
    image_size: int
    batch_size: int

    @property
    def random_weights(self) -> list[str]:
        return [name for name, enc in (("clip", self.clip), ("vggish", self.vggish)) if enc.random]

    def signature(self) -> dict:
        """What determines the numbers in a store: shards must agree on all of it to be merged."""
        return {
            "clip": self.clip.config_dict(),
            "clip_sha256": self.clip.weights_sha256,
            "vggish": self.vggish.config_dict(),
            "vggish_sha256": self.vggish.weights_sha256,
            "fps": FPS,
            "sample_rate": SAMPLE_RATE,
            "image_size": self.image_size,
            "dtype": str(schema.F16),
            # the shape of every pass sets the last bits (batching.py): shards must agree on it
            "pass_size": {"clip_frames": self.clip.batch_size, "vggish_examples": self.vggish.batch_size},
        }

    def feature_sets(self) -> Sets:
        """The feature sets these encoders write, each array with its encoder and preprocessing: the avaf
        set, described by the signature as the store describes a schema-1 file's (shared/store/sets.py)."""
        return {AVAF: avaf_set(self.signature())}


def _device_and_precision(precision: str) -> tuple[str, str]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "auto":
        precision = "fp16" if device == "cuda" else "fp32"
    return device, precision


def load_encoders(cfg: ExtractConfig) -> Encoders:
    """Both frozen encoders on this process's best device, in eval mode."""
    device, precision = _device_and_precision(cfg.runtime.precision)
    rt = cfg.runtime
    clip = load_clip(
        clip_model_name(cfg.clip.model),
        cfg.clip.pretrained,
        device=device,
        precision=precision,
        weights_dir=rt.weights_dir,
        batch_size=rt.batch_size,
    )
    vggish = load_vggish(
        cfg.vggish.weights,
        device=device,
        precision=precision,
        weights_dir=rt.weights_dir,
        batch_size=rt.batch_size,  # 4x (256) padded a 60 s video's 60 examples to 256: 3.5 s instead of 0.9
    )
    _check_frame_size(cfg, clip.image_size)
    enc = Encoders(clip, vggish, clip.image_size, rt.batch_size)
    if enc.random_weights:
        log.warning(
            "RANDOM WEIGHTS for %s: features are meaningless, for tests and smoke runs only "
            "(recorded in the output file)",
            ", ".join(enc.random_weights),
        )
    return enc


def find_weights(cfg: ExtractConfig) -> None:
    """Find both encoders' weights as `load_encoders` will, loading nothing: a missing file stops a run in
    one line before any other work."""
    clip_encoder.find_weights(clip_model_name(cfg.clip.model), cfg.clip.pretrained, cfg.runtime.weights_dir)
    vggish_encoder.find_weights(cfg.vggish.weights, cfg.runtime.weights_dir)


def frame_size(cfg: ExtractConfig) -> int:
    """The side of the decoded frames: the CLIP's input size, read from its config without loading it (what
    `load_encoders(cfg).image_size` will be)."""
    return _check_frame_size(cfg, input_size(clip_model_name(cfg.clip.model)))


def _check_frame_size(cfg: ExtractConfig, size: int) -> int:
    if cfg.decode.image_size not in (None, size):
        raise ValueError(
            f"decode.image_size {cfg.decode.image_size} differs from {cfg.clip.model}'s input size {size}"
        )
    return size


def clip_model_name(model: str) -> str:
    """An open_clip model name; a path to a model-config JSON is registered first (custom or tiny models)."""
    if model.endswith(".json") and os.path.isfile(model):
        import open_clip

        open_clip.add_model_config(model)
        return os.path.splitext(os.path.basename(model))[0]
    return model


def encode_videos(enc: Encoders, items: list[tuple[str, str, DecodedVideo]]) -> list[VideoFeatures]:
    """Encode several decoded videos together: all their frames (and seconds of audio) share batches."""
    lengths = [d.num_seconds for _, _, d in items]
    seen = [d.num_seconds if d.has_video else 0 for _, _, d in items]  # audio-only files: no frames
    tokens, pooled = enc.clip.encode_images(_all_frames([d.frames for _, _, d in items], enc.clip.device))
    # (sum T, N, D), (sum T, D)
    tokens, pooled = (
        _fill_audio_only(tokens.split(seen), lengths),
        _fill_audio_only(pooled.split(seen), lengths),
    )
    audio = enc.vggish.encode_batch([d.audio for _, _, d in items], lengths)  # [(T, 128)]
    out = []
    for (vid, path, d), tk, pl, au in zip(items, tokens, pooled, audio, strict=True):
        au = au.numpy().astype(np.float16)
        au[~d.audio_valid] = 0  # seconds without real audio stay zero, flagged by audio_valid
        out.append(
            VideoFeatures(
                video_id=vid,
                source_path=path,
                visual_tokens=tk.numpy().astype(np.float16),
                visual_pooled=pl.numpy().astype(np.float16),
                audio=au,
                audio_valid=d.audio_valid,
                timestamp=d.timestamps,
                source_size=os.path.getsize(path),
                duration=d.duration,
                has_audio=d.has_audio,
                decoder=d.decoder,
                streams=d.streams,
            )
        )
    return out


def _all_frames(parts: list, device):
    """The videos' frames (sum T, S, S, 3) in one array; one tensor on ``device`` when a GPU decoder left some
    there (they never come back to the CPU)."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return np.concatenate(parts)
    import torch

    return torch.cat([torch.as_tensor(p).to(device) for p in parts])


def _fill_audio_only(parts, lengths: list[int]) -> list:
    """Zero visual features for audio-only inputs (T seconds, no frames), so every video has T rows."""
    import torch

    return [p if len(p) == t else torch.zeros(t, *p.shape[1:]) for p, t in zip(parts, lengths, strict=True)]
