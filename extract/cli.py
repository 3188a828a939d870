"""`avaf-extract` and `avaf-fetch-weights`: the offline feature-extraction stage (DESIGN.md §3)."""

from __future__ import annotations

import logging
import sys

import click

from avaf.extract.config import ExtractConfig
from avaf.shared.config import ConfigError, resolve

OPTIONS = {  # flag name -> (config path, help)
    "videos": (
        "input.videos",
        "Folder searched recursively for videos (mp4, mkv, webm, avi, mov, ...) and audio-only files.",
    ),
    "annotations": (
        "input.annotations",
        "MUSIC-AVQA annotation file or folder (repeatable): encode its questions into the store.",
    ),
    "split": (
        "input.split",
        "Split of the --annotations files (default: from each file name, e.g. avqa-test.json -> test).",
    ),
    "limit": ("input.limit", "Only the first N videos (sorted by path): a smoke run."),
    "clip_model": ("clip.model", "open_clip model name.  [default: ViT-B-32]"),
    "clip_pretrained": (
        "clip.pretrained",
        "open_clip pretrained tag, a local checkpoint (.safetensors/.bin), or 'random'.  [default: openai]",
    ),
    "vggish_weights": (
        "vggish.weights",
        "'default' (torchvggish's release), a local .pth/.safetensors, or 'random'.  [default: default]",
    ),
    "decoder": (
        "decode.backend",
        "Video decoder: auto (PyAV, the faster here; decord if PyAV fails), pyav, or decord (falls back to PyAV).  [default: auto]",
    ),
    "decode_timeout": (
        "decode.timeout_s",
        "Seconds before a hung decode is killed (that video fails, the job goes on).  [default: 300]",
    ),
    "address": (
        "runtime.address",
        "Ray cluster address (else RAY_ADDRESS, else a local Ray instance on this machine).",
    ),
    "in_process": ("runtime.in_process", "Run without Ray, in this process (debugging; identical output)."),
    "num_gpus": (
        "runtime.num_gpus",
        "GPUs per encoder actor (-1: one if this machine has a GPU).  [default: -1]",
    ),
    "num_cpus": ("runtime.num_cpus", "CPUs per encoder actor.  [default: 1]"),
    "encoders": ("runtime.encoders", "Number of encoder actors (one per GPU on a cluster).  [default: 1]"),
    "encoder_threads": (
        "runtime.encoder_threads",
        "Torch threads of a CPU encoder actor (0: every core).  [default: 0]",
    ),
    "batch_size": ("runtime.batch_size", "Frames per CLIP forward pass.  [default: 64]"),
    "videos_per_call": (
        "runtime.videos_per_call",
        "Videos an encoder takes at once (their frames share batches).  [default: 4]",
    ),
    "shard_videos": (
        "runtime.shard_videos",
        "Videos per shard: the most a killed job can lose.  [default: 32]",
    ),
    "weights_dir": (
        "runtime.weights_dir",
        "Folder filled by avaf-fetch-weights: load all weights from there (offline nodes).",
    ),
    "precision": (
        "runtime.precision",
        "auto (fp16 on GPU, fp32 on CPU), fp32, fp16 or bf16.  [default: auto]",
    ),
}
TYPES = {
    "encoder_threads": int,
    "videos_per_call": int,
    "limit": int,
    "decode_timeout": float,
    "num_gpus": float,
    "num_cpus": float,
    "encoders": int,
    "batch_size": int,
    "shard_videos": int,
}


def _flags_to_dict(flags: dict) -> dict:
    """Only the flags the user gave, keyed by their dotted config path ("clip.model")."""
    return {OPTIONS[name][0]: v for name, v in flags.items() if v not in (None, (), False)}


def _options(f):
    for name, (_, text) in reversed(OPTIONS.items()):
        flag = "--" + name.replace("_", "-")
        if name == "in_process":
            f = click.option(flag, is_flag=True, default=False, help=text)(f)
        else:
            f = click.option(
                flag, name, multiple=name == "annotations", type=TYPES.get(name, str), help=text
            )(f)
    return f


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--out", default=None, help="Output feature file; shards go to OUT.shards/.  [default: feats.h5]"
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML/TOML config file; flags override it.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every step.")
@_options
def main(out, config_file, verbose, **flags) -> None:
    """Decode every video under --videos at 1 fps and 16 kHz mono, encode frames with a frozen CLIP ViT
    (all tokens) and audio with VGGish, encode --annotations questions with CLIP's text tower, and write
    resumable shards plus one self-describing feats.h5. Re-running skips what is done and retries what
    failed. Exit status 1 when any video failed."""
    from avaf.extract.encoders.weights import WeightsUnavailable
    from avaf.extract.pipeline import run_extract

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    d = _flags_to_dict(flags) | ({"out": out} if out else {})
    try:
        cfg = resolve(ExtractConfig, config_file, d)
        if not cfg.input.videos and not cfg.input.annotations:
            raise click.UsageError("give --videos and/or --annotations")
        s = run_extract(cfg)
    except (ConfigError, WeightsUnavailable, ValueError, OSError) as e:  # bad input: say so, no traceback
        click.echo(f"avaf-extract: {e}", err=True)
        sys.exit(2)
    if s.random_weights:
        click.echo(
            f"!!! RANDOM WEIGHTS ({', '.join(s.random_weights)}): features for tests only, recorded in {s.out} !!!"
        )
    click.echo(
        f"{s.out}: written {s.written}, skipped as done {s.skipped}, failed {len(s.failed)}, questions {s.questions} ({s.seconds:.1f} s)"
    )
    for vid, err in sorted(s.failed.items()):
        click.echo(f"  failed {vid}: {err}")
    if s.questions_without_video:
        click.echo(
            f"  {s.questions_without_video} questions ask about videos not in the store (kept out of training)"
        )
    sys.exit(1 if s.failed else 0)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--clip-model", default="ViT-B-32", show_default=True, help="open_clip model name.")
@click.option("--clip-pretrained", default="openai", show_default=True, help="open_clip pretrained tag.")
def fetch_weights(folder: str, clip_model: str, clip_pretrained: str) -> None:
    """Download the default CLIP and VGGish weights once into FOLDER (needs network). Copy FOLDER to
    offline cluster nodes and run avaf-extract with --weights-dir FOLDER."""
    from avaf.extract.encoders.weights import WeightsUnavailable, fetch_default_weights

    try:
        paths = fetch_default_weights(folder, clip_model, clip_pretrained)
    except (WeightsUnavailable, ValueError) as e:
        click.echo(f"avaf-fetch-weights: {e}", err=True)
        sys.exit(2)
    for name, path in paths.items():
        click.echo(f"{name}: {path}")
    click.echo(f"now: avaf-extract ... --weights-dir {folder}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out", default="avaf-demo", show_default=True, help="Folder for the generated set, features and run."
)
@click.option(
    "--videos", default=48, show_default=True, help="Generated videos (70% train, 10% val, 20% test)."
)
@click.option("--seconds", default=8, show_default=True, help="Length of each generated video.")
@click.option("--epochs", default=5, show_default=True, help="Training epochs.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated set.")
@click.option(
    "--weights",
    type=click.Choice(["auto", "default", "random"]),
    default="auto",
    show_default=True,
    help="auto: the default CLIP/VGGish weights when available, else random (said loudly); default: fail without them.",
)
@click.option("--in-process", is_flag=True, help="Extract without Ray (debugging).")
@click.option(
    "--clip-model",
    default="ViT-B-32",
    show_default=True,
    help="open_clip model name (or a model-config JSON).",
)
@click.option(
    "--train-config",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML/TOML for avaf-train's --config.",
)
def demo(out, videos, seconds, epochs, seed, weights, in_process, clip_model, train_config) -> None:
    """The whole pipeline in a few minutes on this machine: generate a music-scene set with known answers,
    extract features on a local Ray instance, train AVAF-Net, print the per-type table."""
    from avaf.extract.demo import run_demo
    from avaf.extract.encoders.weights import WeightsUnavailable

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        extra = ("--config", train_config) if train_config else ()
        run_demo(out, videos, seconds, epochs, seed, weights, clip_model, in_process, click.echo, extra)
    except (WeightsUnavailable, RuntimeError) as e:
        click.echo(f"avaf-demo: {e}", err=True)
        sys.exit(2)
