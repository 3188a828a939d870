"""avaf-synth: write a synthetic music-scene AVQA set with known answers (see `avaf.extract.synth.generate`).

avaf-synth --out synth --videos 200 --seed 0 --seconds 5 15 --size 224x224
"""

from __future__ import annotations

import logging

import click

from avaf.extract.synth.generate import generate


def _size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 224x224, got {value!r}") from None
    return width, height


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (created).")
@click.option("--videos", "n_videos", required=True, type=click.IntRange(min=1), help="Number of videos.")
@click.option("--seed", default=0, show_default=True, help="Same seed, same videos and annotation bytes.")
@click.option(
    "--seconds", nargs=2, type=int, default=None, help="MIN MAX: each length drawn from [MIN, MAX] s."
)
@click.option(
    "--duration", type=int, default=10, show_default=True, help="Length of every video (s), if no --seconds."
)
@click.option(
    "--size", default="224x224", show_default=True, callback=_size, help="Frame WIDTHxHEIGHT (even)."
)
@click.option("--fps", default=8, show_default=True, type=click.IntRange(min=1), help="Frames per second.")
@click.option(
    "--splits",
    nargs=3,
    type=float,
    default=(0.7, 0.1, 0.2),
    show_default=True,
    help="Train/val/test shares of the videos.",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Rendering processes [default: all CPUs]."
)
def main(out, n_videos, seed, seconds, duration, size, fps, splits, workers) -> None:
    """Write DIR/videos/*.mp4, DIR/annotations/avqa-{train,val,test}.json and DIR/scenes.json."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = generate(
            out, n_videos, seed, seconds or (duration, duration), size, fps, splits, workers, progress=True
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"{len(summary['videos'])} videos {summary['videos_per_split']} in {out}/videos")
    click.echo(
        f"questions {summary['questions_per_split']} in {out}/annotations; ground truth in {summary['scenes']}"
    )
