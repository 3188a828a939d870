"""avaf-synth: write a synthetic music-scene AVQA set with known answers (see `avaf.extract.synth.generate`).

avaf-synth --out synth --videos 200 --seed 0 --seconds 5 15 --size 224x224
"""

from __future__ import annotations

from dataclasses import dataclass

import click

from avaf.extract.synth.generate import generate
from avaf.shared.cli import (
    CONTEXT,
    Command,
    common_options,
    config_options,
    from_flags,
    option,
    show_progress,
)


@dataclass(frozen=True)
class SynthConfig:
    """`avaf-synth`: how many generated videos, how long, how large."""

    out: str = option(
        None,
        "Output folder (created). One that already holds a set is refused unless --overwrite.",
        required=True,
        path={"file_okay": False},
    )
    videos: int = option(None, "Number of videos.", required=True)
    seed: int = option(0, "Same seed, same videos and annotation bytes.")
    seconds: tuple[int, int] | None = option(None, "MIN MAX: each length drawn from [MIN, MAX] s.")
    duration: int = option(10, "Length of every video (s), if no --seconds.")
    size: str = option("224x224", "Frame WIDTHxHEIGHT (even).")
    fps: int = option(8, "Frames per second.")
    splits: tuple[float, float, float] = option((0.7, 0.1, 0.2), "Train/val/test shares of the videos.")
    workers: int | None = option(None, "Rendering processes (default: all CPUs).")
    overwrite: bool = option(
        False,
        "Delete the set already in --out first (videos/, annotations/, scenes.json; nothing else there), so no "
        "video of the old set stays beside the new ones.",
    )


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
@config_options(SynthConfig)
def main(**flags) -> None:
    """Write DIR/videos/*.mp4, DIR/annotations/avqa-{train,val,test}.json and DIR/scenes.json."""
    c = from_flags(SynthConfig, flags)
    summary = generate(
        c.out,
        c.videos,
        c.seed,
        c.seconds or (c.duration, c.duration),
        _size(c.size),
        c.fps,
        c.splits,
        c.workers,
        progress=show_progress(),
        overwrite=c.overwrite,
    )
    click.echo(f"{len(summary['videos'])} videos {summary['videos_per_split']} in {c.out}/videos")
    click.echo(
        f"questions {summary['questions_per_split']} in {c.out}/annotations; ground truth in {summary['scenes']}"
    )
