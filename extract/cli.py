"""`avaf-extract`, `avaf-fetch-weights` and `avaf-demo`: the offline feature-extraction stage (DESIGN.md §3).

avaf-extract's flags are generated from `ExtractConfig` (defaults, then --config, then flags), and
avaf-fetch-weights' from its `ClipConfig` section; avaf-demo, a one-off, declares plain click options.
"""

from __future__ import annotations

import sys

import click

from avaf.extract.config import ClipConfig, ExtractConfig
from avaf.extract.packs import parse_features
from avaf.extract.preflight import check_clip_model, check_extract
from avaf.shared.cli import (
    CONTEXT,
    USER_ERRORS,
    Command,
    common_options,
    config_file_option,
    config_options,
    end_progress_bars,
    from_flags,
    old_spelling,
    show_progress,
)


class ExtractCommand(Command):
    """A `Command` that also says missing encoder weights on one line (WeightsUnavailable is a RuntimeError),
    looked up only where its module was loaded (it raised it): an early error does not wait for torch."""

    @property
    def user_errors(self) -> tuple[type[BaseException], ...]:
        weights = sys.modules.get("avaf.extract.encoders.weights")
        return USER_ERRORS if weights is None else (*USER_ERRORS, weights.WeightsUnavailable)


@click.command("avaf-extract", cls=ExtractCommand, context_settings=CONTEXT)
@common_options
@config_file_option()
@config_options(ExtractConfig)
def main(config_file, **flags) -> None:
    """Decode every video under --videos at 1 fps and 16 kHz mono, encode frames with a frozen CLIP ViT
    (all tokens) and audio with VGGish, encode --annotations questions with CLIP's text tower, and write
    resumable shards plus one self-describing feats.h5. Re-running into the same --out is how a run is
    resumed, not an overwrite: it skips what is done, retries what failed and adds new videos and questions.
    Exit status 1 when any video failed or the questions could not be written."""
    cfg = from_flags(ExtractConfig, flags, config_file)
    if not cfg.input.videos and not cfg.input.annotations:
        raise click.UsageError("give --videos and/or --annotations")
    parse_features(cfg.features)  # an unknown pack: one line naming it and the known packs, exit 2
    inputs = check_extract(cfg)  # a wrong file or name is one line now, not after torch and Ray have loaded
    from avaf.extract.pipeline import run_extract
    from avaf.shared.files import removing_new_empty_folders
    from avaf.shared.store.writer import shard_dir

    with removing_new_empty_folders(shard_dir(cfg.out)):  # a failed run leaves no empty new/dir/ behind
        s = run_extract(cfg, progress=show_progress(), echo=click.echo, inputs=inputs)
    if s.random_weights:
        click.echo(
            f"!!! RANDOM WEIGHTS ({', '.join(s.random_weights)}): features for tests only, recorded in {s.out} !!!"
        )
    extended = f", given {','.join(s.packs)} {s.extended}" if s.extended else ""
    click.echo(
        f"{s.out}: written {s.written}{extended}, skipped as done {s.skipped}, failed {len(s.failed)}, questions {s.questions} ({s.seconds:.1f} s)"
    )
    for vid, err in sorted(s.failed.items()):
        click.echo(f"  failed {vid}: {err}")
    if s.questions_lost:
        click.echo(f"  questions not written, the same command encodes them: {s.questions_lost}")
    if s.prompts_missing:
        click.echo(
            f"  {s.prompts_missing} questions have a template the --qa-prompts table lacks: no prompt value"
        )
    if s.unmerged:
        click.echo(f"  feats.h5 not rebuilt: {s.unmerged}")
    if s.questions_without_video:
        click.echo(
            f"  {s.questions_without_video} questions ask about videos not in the store (kept out of training)"
        )
    sys.exit(0 if s.ok else 1)


@click.command("avaf-fetch-weights", cls=ExtractCommand, context_settings=CONTEXT)
@common_options
@click.argument("folder", type=click.Path(file_okay=False), required=False)
@click.option("--list", "show", is_flag=True, help="Print pack, encoder and the file each reads in FOLDER.")
@click.option("--features", default="avaf", show_default=True, help="The packs whose weights to fetch.")
@config_options(ClipConfig)
def fetch_weights(folder: str | None, show: bool, features: str, **flags) -> None:
    """Download the default weights of the --features packs' encoders once into FOLDER (needs network).
    Copy FOLDER to offline cluster nodes and run avaf-extract with --weights-dir FOLDER. A file that cannot
    be downloaded is one line saying why and where to put it by hand; exit status 2."""
    from avaf.extract.packs import fetch_pack_weights, weights_files

    cfg = ExtractConfig(clip=from_flags(ClipConfig, flags))
    if show:
        for pack, encoder, name in weights_files(cfg):
            click.echo(f"{pack}\t{encoder}\t{name}")
        return
    if folder is None:
        raise click.UsageError("give FOLDER (or --list)")
    done, failed = fetch_pack_weights(folder, cfg, parse_features(features))
    for name, path in done.items():
        click.echo(f"{name}: {path}")
    for name, why in failed.items():
        click.echo(f"avaf-fetch-weights: {name}: {why}", err=True)
    if failed:
        sys.exit(2)
    click.echo(f"now: avaf-extract ... --weights-dir {folder}")


@click.command("avaf-demo", cls=ExtractCommand, context_settings=CONTEXT)
@common_options
@click.option(
    "--out",
    default="avaf-demo",
    show_default=True,
    help="Folder for the generated set, features and run (demo.json, synth/, feats.h5, feats.h5.shards/, run/). "
    "The same command on it continues a stopped demo; one holding a demo of other flags (or files of no demo) "
    "is refused unless --overwrite.",
)
@click.option(
    "--num-videos",
    "videos",
    type=int,
    default=48,
    show_default=True,
    help="How many videos to generate (70% train, 10% val, 20% test).",
)
@old_spelling("--videos", "--num-videos", "videos", type=int)
@click.option("--seconds", type=int, default=8, show_default=True, help="Length of each generated video.")
@click.option("--epochs", type=int, default=5, show_default=True, help="Training epochs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the generated set.")
@click.option(
    "--weights",
    type=click.Choice(["auto", "default", "random"]),
    default="auto",
    show_default=True,
    help="auto: the default CLIP/VGGish weights when available, else random (said loudly); default: fail "
    "without them; random: random encoders.",
)
@click.option(
    "--in-process",
    is_flag=True,
    help="Extract without Ray, in this process: faster for a set this small (avaf-extract itself would, below "
    "100 videos); without it the demo runs the pipeline as a real job does, on a local Ray instance.",
)
@click.option(
    "--clip-model",
    default=ClipConfig.model,
    show_default=True,
    help="open_clip model name (or a model-config JSON).",
)
@click.option(
    "--train-config",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML/TOML for avaf-train's --config.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Delete the demo's earlier demo.json, synth/, feats.h5, feats.h5.shards/ and run/ in --out first "
    "(nothing else there), so the new demo starts clean instead of continuing.",
)
def demo(out: str, train_config: str | None, overwrite: bool, **options) -> None:
    """The whole pipeline in a few minutes on this machine: generate a music-scene set with known answers,
    extract features on a local Ray instance (--in-process: without Ray), train AVAF-Net, print the
    per-type table. Stopped (Ctrl-C), the same command continues where it stopped."""
    from avaf.extract.synth.generate import SynthSpec

    check_clip_model(options["clip_model"])
    SynthSpec(options["videos"], options["seed"], (options["seconds"], options["seconds"]))  # checks itself
    from avaf.extract.demo import DemoOptions, run_demo

    extra = ("--config", train_config) if train_config else ()
    try:
        chosen = DemoOptions(train_args=extra, **options)
        run_demo(out, chosen, echo=click.echo, overwrite=overwrite, progress=show_progress())
    except KeyboardInterrupt:
        end_progress_bars()  # the line below starts a line of its own
        click.echo("avaf-demo: stopped; the same command continues it", err=True)
        sys.exit(130)  # as a shell reports a command stopped by Ctrl-C
