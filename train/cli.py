"""`avaf-train` and `avaf-eval`: AVAF-Net on a feature store, evaluated like the paper's tables."""

from __future__ import annotations

import logging

import click

from avaf.shared.cli import (
    CONTEXT,
    Command,
    common_options,
    config_file_option,
    config_options,
    given,
    show_progress,
)
from avaf.shared.files import json_text

from .config import TrainConfig, check_config, load_config

FILE = click.Path(exists=True, dir_okay=False)
SUBSETS = click.Choice(["all", "real"])
CHECKPOINT_HELP = "A run's best/ or last/ folder, or its model.safetensors."
BUDGET_HELP = "Feature bytes held in memory at most (as avaf-train's); a larger split is streamed."


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
    over = given(TrainConfig, flags)
    if resume and config_file is None:  # the run's own resolved config, then the flags given now
        config_file = f"{check_config(None, over).run.out_dir}/config.json"
    feats = check_config(config_file, over).data.feats  # flags, file and features checked before torch loads
    if not feats:
        raise click.UsageError("Missing option '--feats' (the feature file from avaf-extract)")
    check_feats(feats)
    from .loop import train

    cfg = load_config(config_file, over)
    results = train(cfg, resume=resume, progress=show_progress(), overwrite=overwrite)
    click.echo(open(f"{cfg.run.out_dir}/results.md").read())
    click.echo(f"best epoch {results['best_epoch']} (selected on val); outputs in {cfg.run.out_dir}/")


@click.command("avaf-eval", cls=Command, context_settings=CONTEXT)
@common_options
@click.option("--feats", required=True, type=FILE, help="Feature file from avaf-extract.")
@click.option("--checkpoint", required=True, type=click.Path(exists=True), help=CHECKPOINT_HELP)
@click.option("--split", default="test", show_default=True, help="Split to evaluate.")
@click.option(
    "--subset", default="all", show_default=True, type=SUBSETS, help="real: MUSIC-AVQA-Real questions only."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ...")
@click.option("--json", "as_json", is_flag=True, help="Print the row and δ per type as JSON.")
@click.option("--memory-budget", default="auto", show_default=True, help=BUDGET_HELP)
def eval_main(feats, checkpoint, split, subset, device, as_json, memory_budget) -> None:
    """Evaluate a checkpoint on one split of FEATS and print the paper's table row."""
    check_feats(feats, "avaf-eval")  # before torch loads
    # the model, its variant and its T come from the checkpoint
    from .checkpoint import load_model
    from .evaluate import evaluate, results_markdown
    from .loop import padding, resolve_device
    from .stream import open_splits

    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    data = open_splits(feats, [split], subset, dev, memory_budget)[split]
    ev = evaluate(model, data, padding([data], meta["config"].model.max_seconds), 128)
    if as_json:
        out = {"table": ev.table, "delta_per_type": ev.delta_per_type, "questions": len(data)}
        out |= {"delta_note": ev.delta_note} if ev.delta_note else {}
        click.echo(json_text(out, indent=2))
    else:
        click.echo(results_markdown({f"{split} ({subset})": ev}))


def check_feats(path: str, who: str = "avaf-train") -> None:
    """`path` is a feature store this avaf reads (its format and schema version) and holds videos, checked
    with h5py alone: a wrong --feats is one line before torch loads."""
    from avaf.shared.store.reader import FeatureStore

    with FeatureStore(path) as fs:
        fs.require_videos(who)
