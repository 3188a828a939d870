"""`ExtractConfig`: every setting of `avaf-extract`, with its default (DESIGN.md §3).

Override order: these defaults, then `--config FILE` (YAML/TOML), then flags. Each `option` field is
also a flag of `avaf-extract` (its help is the field's metadata; `avaf.shared.cli`). The resolved config is
saved in the root attributes of every shard and of `feats.h5`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from avaf.shared.cli import option


@dataclass(frozen=True)
class InputConfig:
    videos: str | None = option(
        None,
        "Folder searched recursively for videos (mp4, mkv, webm, avi, mov, ...) and audio-only files.",
        path={"exists": True, "file_okay": False},
    )
    annotations: tuple[str, ...] = option(
        (),
        "MUSIC-AVQA annotation file or folder (repeatable): encode its questions into the store.",
        path={"exists": True},
    )
    split: str | None = option(
        None, "Split of the --annotations files (default: from each file name, avqa-test.json -> test)."
    )
    limit: int | None = option(None, "Only the first N videos (sorted by path): a smoke run.")
    qa_prompts: str | None = option(
        None,
        "TSPM's QA-prompt table (TextPrompt.xlsx, or a .csv of its columns): the tspm pack then also encodes "
        "each question's prompt sentence (a template the table lacks: no value, counted in the summary).",
        path={"exists": True, "dir_okay": False},
    )


@dataclass(frozen=True)
class DecodeConfig:
    backend: str = option(
        "auto",
        "Video decoder: auto (PyAV on the CPU; decord if PyAV fails), pyav, pyav-cuda (NVDEC; the encoders' "
        "process decodes, frames stay on the GPU), decord, torchcodec or torchcodec-cuda (pyav-cuda and both "
        "torchcodec ones fall back to PyAV, saying why).",
        flag="decoder",
        choices=("auto", "pyav", "pyav-cuda", "decord", "torchcodec", "torchcodec-cuda"),
    )
    threads: int = option(
        0,
        "FFmpeg decoding threads per video: 0 auto (one in each Ray decode task, where every core decodes its "
        "own video: the fewest CPU-seconds; FFmpeg's choice in process, one video at a time), or n.",
        flag="decode-threads",
    )
    image_size: int | None = (
        None  # frames resized (shorter side) + centre-cropped to this; None: CLIP's input
    )
    timeout_s: float = option(
        300.0,
        "Seconds before a hung decode is killed (that video fails, the job goes on).",
        flag="decode-timeout",
    )


@dataclass(frozen=True)
class ClipConfig:
    model: str = option("ViT-B-32", "open_clip model name (or a model-config JSON).", flag="clip-model")
    pretrained: str = option(
        "openai",
        "open_clip pretrained tag, a local checkpoint (.safetensors/.bin), or 'random'.",
        flag="clip-pretrained",
    )


@dataclass(frozen=True)
class VGGishConfig:
    weights: str = option(
        "default",
        "'default' (torchvggish's release), a local .pth/.safetensors, or 'random'.",
        flag="vggish-weights",
    )


@dataclass(frozen=True)
class TspmConfig:
    """The tspm pack's encoders (docs/extraction.md, "Feature packs"). `clip_model` and `tome_model_kwargs`
    have no flag: a config file (or a test) sets them to build stand-ins, e.g. tiny widths on random weights."""

    clip_weights: str = option(
        "openai",
        "tspm pack's CLIP ViT-L/14@336: an open_clip tag, a local .safetensors of open_clip's state dict, or "
        "'random'.",
        flag="tspm-clip-weights",
    )
    tome_weights: str = option(
        "default",
        "tspm pack's ToMe ViT-L/16@384: 'default' (timm's default tag), a timm tag, a local .safetensors of "
        "timm's state dict, or 'random'.",
        flag="tome-weights",
    )
    clip_batch_size: int = option(
        16, "Frames per forward pass of the tspm CLIP.", flag="tspm-clip-batch-size"
    )
    tome_batch_size: int = option(
        16, "Frames per forward pass of ToMe (always fp32).", flag="tome-batch-size"
    )
    clip_model: str = "ViT-L-14-336"  # an open_clip name or a model-config JSON
    tome_model_kwargs: dict = field(default_factory=dict)  # timm.create_model keywords (width, depth, ...)


@dataclass(frozen=True)
class RuntimeConfig:
    address: str | None = option(
        None, "Ray cluster address (else RAY_ADDRESS, else a local Ray instance on this machine)."
    )
    in_process: bool | None = option(
        None,
        "--in-process: without Ray, in this process; --no-in-process: on Ray. Neither: on Ray with --address "
        "or RAY_ADDRESS; on this machine in this process below --local-ray-min-videos videos to do and one "
        "encoder (Ray's start-up costs more than it saves there), else on a local Ray instance. The mode is "
        "printed; the arrays are the same.",
    )
    local_ray_min_videos: int = option(
        100,
        "Without --address, a job with at least this many videos to do runs on local Ray (see --in-process).",
    )
    num_gpus: float = option(-1.0, "GPUs per encoder actor (-1: one if this machine has a GPU).")
    num_cpus: float = option(1.0, "CPUs per encoder actor.")
    encoder_threads: int = option(0, "Torch threads of a CPU encoder actor (0: every core of its node).")
    encoders: int = option(1, "Number of encoder actors (one per GPU on a cluster).")
    batch_size: int = option(64, "Frames per CLIP forward pass (VGGish: examples per pass).")
    videos_per_call: int = option(4, "Videos an encoder takes at once (their frames share batches).")
    shard_videos: int = option(32, "Videos per shard: the most a killed job can lose.")
    weights_dir: str | None = option(
        None, "Folder filled by avaf-fetch-weights: load all weights from there (offline nodes)."
    )
    random_weights: bool = option(
        False,
        "Every encoder of every pack on random weights: features for smoke runs and tests only (recorded in "
        "the output file).",
    )
    precision: str = option(
        "auto",
        "auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16.",
        choices=("auto", "fp32", "fp16", "bf16"),
    )


@dataclass(frozen=True)
class ExtractConfig:
    out: str = option(
        "feats.h5",
        "Output feature file; shards go to OUT.shards/ beside it. An existing OUT is resumed, never overwritten: "
        "done videos are skipped, failed ones retried, new ones added.",
        path={"dir_okay": False},
    )
    features: str = option(
        "avaf",
        "Feature packs, a comma list: avaf (CLIP ViT-B/32 tokens, VGGish, CLIP text: AVAF-Net, PSTP-Net), tspm "
        "(VGGish, CLIP ViT-L/14@336 frames and text, ToMe-14 tokens: TSPM, QA-TIGER, AV-Master, STG). Each "
        "video is decoded once for all of them; a pack missing from an existing OUT is added to every video.",
    )
    input: InputConfig = field(default_factory=InputConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    vggish: VGGishConfig = field(default_factory=VGGishConfig)
    tspm: TspmConfig = field(default_factory=TspmConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
