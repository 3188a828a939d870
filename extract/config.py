"""`ExtractConfig`: every setting of `avaf-extract`, with its default (DESIGN.md §3).

Override order: these defaults, then `--config FILE` (YAML/TOML), then flags. The resolved config is
saved in the root attributes of every shard and of `feats.h5`.
"""

from __future__ import annotations

from dataclasses import dataclass, field



@dataclass(frozen=True)
class InputConfig:
    videos: str | None = None  # folder searched recursively for videos (and audio-only files)
    annotations: tuple[str, ...] = ()  # MUSIC-AVQA annotation files or folders
    split: str | None = None  # split of the annotation files (default: from each file's name)
    limit: int | None = None  # only the first N videos (sorted by path): smoke runs


@dataclass(frozen=True)
class DecodeConfig:
    backend: str = "auto"  # auto | decord | pyav
    image_size: int | None = (
        None  # frames resized (shorter side) + centre-cropped to this; None: CLIP's input size
    )
    timeout_s: float = 300.0  # a decode running longer is killed: one video lost, never the job


@dataclass(frozen=True)
class ClipConfig:
    model: str = "ViT-B-32"  # any open_clip model name
    pretrained: str = "openai"  # open_clip tag, a local checkpoint path, or "random"


@dataclass(frozen=True)
class VGGishConfig:
    weights: str = "default"  # "default" (torchvggish's release), a local path, or "random"


@dataclass(frozen=True)
class RuntimeConfig:
    address: str | None = None  # Ray cluster; None: RAY_ADDRESS, else a local instance on this machine
    in_process: bool = False  # no Ray: decode and encode in this process (debugging; same output)
    num_gpus: float = -1.0  # per encoder actor; -1: 1 when this machine has a GPU, else 0
    num_cpus: float = 1.0  # per encoder actor
    encoder_threads: int = 0  # torch threads of a CPU encoder actor; 0: every core of its node
    encoders: int = 1  # encoder actors (one per GPU on a cluster)
    batch_size: int = 64  # frames per CLIP forward pass (VGGish: examples per pass)
    videos_per_call: int = 4  # videos an encoder takes at once: their frames share batches
    shard_videos: int = 32  # videos per shard: what a kill can lose at most
    weights_dir: str | None = None  # folder from `avaf-extract fetch-weights`: load weights from there
    precision: str = "auto"  # auto (fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16


@dataclass(frozen=True)
class ExtractConfig:
    out: str = "feats.h5"
    input: InputConfig = field(default_factory=InputConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    vggish: VGGishConfig = field(default_factory=VGGishConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
