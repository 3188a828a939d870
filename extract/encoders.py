"""The frozen encoders of one extraction, bundled: CLIP ViT tokens and VGGish audio (DESIGN.md §3).

`load_encoders(cfg)` builds both from the config (library default weights, a local file, the
`--weights-dir` folder, or random initialisation); `encode_video` turns one decoded video into the
store's `VideoFeatures`. The same functions serve the Ray actors and the in-process path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from avaf.shared import schema
from avaf.shared.store import VideoFeatures

from .clip_encoder import ClipEncoder, load_clip
from .config import FPS, SAMPLE_RATE, ExtractConfig
from .decode import DecodedVideo
from .vggish_encoder import VGGishEncoder, load_vggish

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
        }


def _device_and_precision(precision: str) -> tuple[str, str]:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if precision == "auto":
        precision = "fp16" if device == "cuda" else "fp32"
    return device, precision


def load_encoders(cfg: ExtractConfig) -> Encoders:
    """Both frozen encoders on this process's best device, in eval mode."""
    device, precision = _device_and_precision(cfg.runtime.precision)
    clip = load_clip(
        cfg.clip.model, cfg.clip.pretrained, device=device, precision=precision, weights_dir=cfg.runtime.weights_dir
    )
    vggish = load_vggish(cfg.vggish.weights, device=device, weights_dir=cfg.runtime.weights_dir)
    enc = Encoders(clip, vggish, cfg.decode.image_size, cfg.runtime.batch_size)
    if enc.random_weights:
        log.warning(
            "RANDOM WEIGHTS for %s: features are meaningless, for tests and smoke runs only "
            "(recorded in the output file)",
            ", ".join(enc.random_weights),
        )
    return enc


def encode_video(enc: Encoders, video_id: str, path: str, d: DecodedVideo) -> VideoFeatures:
    """CLIP tokens and pooled embedding per second, VGGish per second, as float16 arrays."""
    t = len(d.timestamps)
    tokens, pooled = [], []
    for a in range(0, t, enc.batch_size):
        tk, pl = enc.clip.encode_images(d.frames[a : a + enc.batch_size])
        tokens.append(np.asarray(tk, dtype=np.float16))
        pooled.append(np.asarray(pl, dtype=np.float16))
    audio = np.asarray(enc.vggish.encode(d.audio), dtype=np.float16)
    audio[~d.audio_valid] = 0  # seconds without real audio stay zero, flagged by audio_valid
    return VideoFeatures(
        video_id=video_id,
        source_path=path,
        visual_tokens=np.concatenate(tokens),
        visual_pooled=np.concatenate(pooled),
        audio=audio,
        audio_valid=d.audio_valid,
        timestamp=d.timestamps,
        source_size=_size(path),
        duration=d.duration,
        has_audio=d.has_audio,
        decoder=d.decoder,
        streams=d.streams,
    )


def _size(path: str) -> int:
    import os

    return os.path.getsize(path)
