"""`avaf-train` and `avaf-eval`: AVAF-Net on a feature store, evaluated like the paper's tables."""

from __future__ import annotations

import json
import logging
import sys

import click

FLAGS = {  # flag -> (config key, type, help)
    "variant": (
        "model.variant",
        click.Choice(["paper", "authors"]),
        "paper: AVAF-Net as published; authors: the authors' public code (DESIGN.md §5b), with its recipe "
        "(batch 64, seed 42, temporal weight 100). Saved in the checkpoint.  [default: paper]",
    ),
    "epochs": ("optim.epochs", int, "Epochs.  [default: 30]"),
    "batch_size": ("optim.batch_size", int, "Questions per batch.  [default: 32; authors 64]"),
    "lr": ("optim.lr", float, "Adam learning rate.  [default: 1e-4]"),
    "lr_step": (
        "optim.lr_step_epochs",
        int,
        "Multiply the lr by --lr-gamma every this many epochs.  [default: 8]",
    ),
    "lr_gamma": ("optim.lr_gamma", float, "Step decay factor.  [default: 0.1]"),
    "seed": (
        "optim.seed",
        int,
        "Random seed (runs are deterministic on CPU given the seed).  [default: 0; authors 42]",
    ),
    "device": ("run.device", str, "auto (GPU if present), cpu, cuda, cuda:1, ...  [default: auto]"),
    "threads": ("run.threads", int, "Torch CPU threads (0: all cores).  [default: 0]"),
    "alpha": ("loss.alpha", float, "Weight of the temporal alignment loss (TACL, eq. 14).  [default: 1.0]"),
    "beta": ("loss.beta", float, "Weight of the spatial alignment loss (SACL, eq. 14).  [default: 0.2]"),
    "phi": ("loss.sacl_phi", float, "SACL threshold for positive patches (eq. 7).  [default: 0.019]"),
    "tau": ("loss.sacl_tau", float, "SACL temperature (eq. 8).  [default: 0.4]"),
    "seconds": ("model.max_seconds", int, "Seconds T used per video (longer videos are cut).  [default: 60]"),
    "dim": ("model.dim", int, "Feature width D (512 for CLIP ViT-B/32).  [default: 512]"),
    "subset": (
        "data.subset",
        click.Choice(["all", "real"]),
        "all, or real (MUSIC-AVQA-Real: real videos only).  [default: all]",
    ),
}
FEATS = click.option(
    "--feats",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Feature file from avaf-extract.",
)
SWITCHES = {  # paper Table 3 rows
    "no_tacl": "Ablation: without temporal alignment contrastive learning.",
    "no_avcm": "Ablation: without audio-visual clue mining.",
    "no_sacl": "Ablation: without spatial alignment contrastive learning.",
    "no_qoaf": "Ablation: without question-oriented adaptive weights (plain concatenation).",
    "no_all": "Ablation: without all modules (pooled inputs -> classifier).",
}


def _with_flags(f):
    for name, text in reversed(SWITCHES.items()):
        f = click.option("--" + name.replace("_", "-"), name, is_flag=True, default=None, help=text)(f)
    for name, (_, kind, text) in reversed(FLAGS.items()):
        f = click.option("--" + name.replace("_", "-"), name, type=kind, default=None, help=text)(f)
    return f


def _overrides(flags: dict) -> dict:
    d = {FLAGS[k][0]: v for k, v in flags.items() if k in FLAGS}
    d |= {f"model.{k}": True for k, v in flags.items() if k in SWITCHES and v}
    return d


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@FEATS
@click.option("--out", default=None, help="Run folder.  [default: runs/avaf]")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML/TOML config; flags override it.",
)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option(
    "--no-amp",
    is_flag=True,
    default=None,
    help="Full precision on GPU (default: bf16/fp16 autocast; authors: fp32).",
)
@_with_flags
def main(feats, out, config_file, resume, no_amp, **flags) -> None:
    """Train AVAF-Net on the train split of FEATS, select the checkpoint on val, and report test at that
    checkpoint as the paper's table (9 question types, Audio / Visual / Audio-Visual averages, overall)."""
    from .config import ConfigError, load_config
    from .loop import train

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    over = _overrides(flags) | {"data.feats": feats, "run.out_dir": out, "run.amp": False if no_amp else None}
    if resume and config_file is None:  # the run's own resolved config, then the flags given now
        config_file = f"{load_config(None, over).run.out_dir}/config.json"
    try:
        cfg = load_config(config_file, over)
        results = train(cfg, resume=resume)
    except (ConfigError, ValueError) as e:
        click.echo(f"avaf-train: {e}", err=True)
        sys.exit(2)
    click.echo(open(f"{cfg.run.out_dir}/results.md").read())
    click.echo(f"best epoch {results['best_epoch'] + 1} (selected on val); outputs in {cfg.run.out_dir}/")


@click.command(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@FEATS
@click.option(
    "--checkpoint",
    "ckpt",
    required=True,
    type=click.Path(exists=True),
    help="A run's best/ or last/ folder, or its model.safetensors.",
)
@click.option("--split", default="test", show_default=True, help="Split to evaluate.")
@click.option(
    "--subset",
    type=click.Choice(["all", "real"]),
    default="all",
    show_default=True,
    help="real: MUSIC-AVQA-Real questions only.",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ...")
@click.option("--json", "as_json", is_flag=True, help="Print the row and δ per type as JSON.")
def eval_main(feats, ckpt, split, subset, device, as_json) -> None:
    """Evaluate a checkpoint on one split of FEATS and print the paper's table row."""
    from avaf.shared.store.reader import FeatureStore

    from .checkpoint import CheckpointError, load_model
    from .data import load_split
    from .evaluate import evaluate, results_markdown
    from .loop import resolve_device

    dev = resolve_device(device)
    try:
        model, meta = load_model(ckpt, dev)
        with FeatureStore(feats) as fs:
            data = load_split(fs, split, subset, dev, meta["config"].model.variant)
        cfg = meta["config"]
        ev = evaluate(
            model,
            data,
            128,
            min(cfg.model.max_seconds, int(data.video_length.max())),
            int(data.word_length.max()),
        )
    except (CheckpointError, ValueError) as e:
        click.echo(f"avaf-eval: {e}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(
            json.dumps(
                {"table": ev.table, "delta_per_type": ev.delta_per_type, "questions": len(data)}, indent=2
            )
        )
    else:
        click.echo(results_markdown({f"{split} ({subset})": ev}))
