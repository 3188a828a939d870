"""`avaf-train` and `avaf-eval`: AVAF-Net on a feature store, evaluated like the paper's tables."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import click

from avaf.shared.cli import (
    CONTEXT,
    Command,
    common_options,
    config_file_option,
    config_options,
    from_flags,
    given,
    option,
    show_progress,
)

from .config import TrainConfig, load_config


@dataclass(frozen=True)
class EvalConfig:
    """`avaf-eval`: which checkpoint on which split; the model and its variant come from the checkpoint."""

    feats: str = option(
        None, "Feature file from avaf-extract.", required=True, path={"exists": True, "dir_okay": False}
    )
    checkpoint: str = option(
        None, "A run's best/ or last/ folder, or its model.safetensors.", required=True, path={"exists": True}
    )
    split: str = option("test", "Split to evaluate.")
    subset: str = option("all", "real: MUSIC-AVQA-Real questions only.", choices=("all", "real"))
    device: str = option("auto", "auto, cpu, cuda, ...")
    json: bool = option(False, "Print the row and δ per type as JSON.")
    memory_budget: str = option(
        "auto", "Feature bytes held in memory at most (as avaf-train's); a larger split is streamed."
    )


@click.command("avaf-train", cls=Command, context_settings=CONTEXT)
@common_options(base=logging.INFO)
@config_file_option()
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the run in --out from its last checkpoint (from the start if it has none yet).",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace the run in --out: its config.json, metrics.jsonl, best/, last/, results.*, "
    "predictions.jsonl, curves.png, delta.png and tensorboard/ are deleted first, so nothing of it mixes with "
    "the new run; other files are kept. "
    "Without it, an --out that holds a run is refused.",
)
@config_options(TrainConfig)
def main(config_file, resume, overwrite, **flags) -> None:
    """Train AVAF-Net on the train split of FEATS, select the checkpoint on val, and report test at that
    checkpoint as the paper's table (9 question types, Audio / Visual / Audio-Visual averages, overall)."""
    from .loop import train

    over = given(TrainConfig, flags)
    if resume and config_file is None:  # the run's own resolved config, then the flags given now
        config_file = f"{load_config(None, over).run.out_dir}/config.json"
    cfg = load_config(config_file, over)
    if not cfg.data.feats:
        raise click.UsageError("Missing option '--feats' (the feature file from avaf-extract)")
    results = train(cfg, resume=resume, progress=show_progress(), overwrite=overwrite)
    click.echo(open(f"{cfg.run.out_dir}/results.md").read())
    click.echo(f"best epoch {results['best_epoch'] + 1} (selected on val); outputs in {cfg.run.out_dir}/")


@click.command("avaf-eval", cls=Command, context_settings=CONTEXT)
@common_options
@config_options(EvalConfig)
def eval_main(**flags) -> None:
    """Evaluate a checkpoint on one split of FEATS and print the paper's table row."""
    from .checkpoint import load_model
    from .evaluate import evaluate, results_markdown
    from .loop import resolve_device
    from .stream import open_splits

    c = from_flags(EvalConfig, flags)
    feats, ckpt, split, subset = c.feats, c.checkpoint, c.split, c.subset
    dev = resolve_device(c.device)
    model, meta = load_model(ckpt, dev)
    data = open_splits(feats, [split], subset, dev, meta["config"].model.variant, c.memory_budget)[split]
    cfg = meta["config"]
    ev = evaluate(
        model,
        data,
        128,
        min(cfg.model.max_seconds, int(data.video_length.max())),
        int(data.word_length.max()),
    )
    if c.json:
        click.echo(
            json.dumps(
                {"table": ev.table, "delta_per_type": ev.delta_per_type, "questions": len(data)}, indent=2
            )
        )
    else:
        click.echo(results_markdown({f"{split} ({subset})": ev}))
