"""avaf-synth: write a synthetic music-scene AVQA set with known answers (see `avaf.extract.synth.generate`).

avaf-synth --out synth --num-videos 200 --seed 0 --seconds 5 15 --size 224x224
"""

from __future__ import annotations

import click

from avaf.extract.synth.generate import DEFAULT_SPLITS, SynthSpec, generate
from avaf.shared.cli import CONTEXT, Command, common_options, old_spelling, show_progress


def _size(value: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(
            f"expected WIDTHxHEIGHT such as 224x224, got {value!r}", param_hint="--size"
        ) from None
    return width, height


@click.command("avaf-synth", cls=Command, context_settings=CONTEXT)
@common_options
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder (created). One that already holds a set is refused unless --overwrite.",
)
@click.option("--num-videos", "videos", type=int, help="How many videos to generate (required).")
@old_spelling("--videos", "--num-videos", "videos", required=True, type=int)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Same seed, same videos and annotation bytes."
)
@click.option("--seconds", type=int, nargs=2, help="MIN MAX: each length drawn from [MIN, MAX] s.")
@click.option(
    "--duration", type=int, default=10, show_default=True, help="Length of every video (s), if no --seconds."
)
@click.option("--size", default="224x224", show_default=True, help="Frame WIDTHxHEIGHT (even).")
@click.option("--fps", type=int, default=8, show_default=True, help="Frames per second.")
@click.option(
    "--splits",
    type=float,
    nargs=3,
    default=DEFAULT_SPLITS,
    show_default=True,
    help="Train/val/test shares of the videos.",
)
@click.option("--workers", type=int, help="Rendering processes (default: all CPUs).")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Delete the set already in --out first (videos/, annotations/, scenes.json; nothing else there), so no "
    "video of the old set stays beside the new ones.",
)
def main(
    out: str,
    seconds: tuple[int, int] | None,
    duration: int,
    size: str,
    workers: int | None,
    overwrite: bool,
    **spec,  # videos, seed, fps, splits: as SynthSpec names them
) -> None:
    """Write DIR/videos/*.mp4, DIR/annotations/avqa-{train,val,test}.json and DIR/scenes.json."""
    spec = SynthSpec(seconds=seconds or (duration, duration), size=_size(size), **spec)
    summary = generate(out, spec, workers=workers, progress=show_progress(), overwrite=overwrite)
    click.echo(f"{len(summary['videos'])} videos {summary['videos_per_split']} in {out}/videos")
    click.echo(
        f"questions {summary['questions_per_split']} in {out}/annotations; ground truth in {summary['scenes']}"
    )
