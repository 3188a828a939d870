"""`avaf-demo`: the whole pipeline on one machine, on a generated music-scene set with known answers.

    avaf-demo --out demo/          # generate -> avaf-extract (local Ray) -> avaf-train -> the per-type table

Step 1 writes real mp4 files and MUSIC-AVQA-format annotations (`avaf.extract.synth.generate`); step 2
extracts features on a local Ray instance, as a real job runs (`--in-process`: without Ray), with the default
encoder weights when it can get them, and otherwise says loudly that it falls back to random encoders (the
feature file records it); step 3 runs `avaf-train` on the feature file in its own process: the file is the
whole interface between the stages (DESIGN.md §1). A folder that already holds a demo's outputs
(`DEMO_FILES`) is refused unless `overwrite`, which deletes them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from avaf.extract.config import ClipConfig, ExtractConfig, InputConfig, VGGishConfig
from avaf.extract.encoders.weights import WeightsUnavailable
from avaf.extract.pipeline import ExtractSummary, run_extract
from avaf.extract.synth.generate import SynthSpec, generate
from avaf.shared.errors import AvafError
from avaf.shared.files import check_fresh_output
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.schema import SECONDS

TRAIN = ("-m", "avaf.train")  # avaf-train in its own process: the feature file is the whole interface
DEMO_FILES = ("synth", "feats.h5", "feats.h5.shards", "run")  # what a demo writes into its folder


def choose_weights(weights: str, clip_model: str, echo: Callable[[str], None]) -> tuple[str, str]:
    """(clip pretrained, vggish weights): the defaults when they load, else random, said loudly."""
    if weights == "random":
        return "random", "random"
    from avaf.extract.encoders.clip_encoder import load_clip
    from avaf.extract.encoders.vggish_encoder import load_vggish

    try:
        load_clip(clip_model, "openai")
        load_vggish("default")
        return "openai", "default"
    except WeightsUnavailable as e:
        if weights == "default":
            raise
        echo("")
        echo("!" * 100)
        echo(
            "!!! The default encoder weights are not available here, so this demo falls back to RANDOM encoders."
        )
        echo(f"!!! Why: {str(e).splitlines()[0][:300]}")
        echo("!!! Accuracies below then measure the trainer on random features, not CLIP/VGGish; the feature")
        echo("!!! file records random_weights. Fix: avaf-fetch-weights DIR on a machine with network.")
        echo("!" * 100)
        echo("")
        return "random", "random"


@dataclass(frozen=True)
class DemoOptions:
    """What a demo generates, extracts with and trains (avaf-demo's flags)."""

    videos: int = 48
    seconds: int = 8  # every video's length
    epochs: int = 5
    seed: int = 0  # of the generated set
    weights: str = "auto"  # auto, default or random: `choose_weights`
    clip_model: str = ClipConfig.model
    in_process: bool = False  # extract without Ray
    train_args: tuple[str, ...] = ()  # more avaf-train arguments, e.g. ("--config", "train.yaml")


def run_demo(
    out: str | Path,
    options: DemoOptions = DemoOptions(),
    echo: Callable[[str], None] = print,
    overwrite: bool = False,
) -> dict:
    """Generate, extract, train; returns the paths of what was written and the results table."""
    o = options
    out = check_fresh_output(out, "a demo", DEMO_FILES, overwrite, "choose a new --out")
    echo(f"[1/3] generating {o.videos} scenes of {o.seconds} s with known answers -> {out / 'synth'}")
    synth = generate(out / "synth", SynthSpec(o.videos, o.seed, (o.seconds, o.seconds)), progress=True)
    echo(f"      questions per split: {synth['questions_per_split']}")
    clip_pretrained, vggish_weights = choose_weights(o.weights, o.clip_model, echo)
    feats = out / "feats.h5"
    echo(
        f"[2/3] avaf-extract: CLIP {o.clip_model} ({clip_pretrained}) + VGGish ({vggish_weights}) -> {feats}"
    )
    cfg = ExtractConfig(
        out=str(feats),
        input=InputConfig(
            videos=str(out / "synth" / "videos"), annotations=(str(out / "synth" / "annotations"),)
        ),
        clip=ClipConfig(model=o.clip_model, pretrained=clip_pretrained),
        vggish=VGGishConfig(weights=vggish_weights),
    )
    cfg = _with_runtime(cfg, o.in_process, o.seconds)
    summary: ExtractSummary = run_extract(cfg, echo=lambda line: echo(f"      {line}"))
    echo(f"      written {summary.written}, skipped {summary.skipped}, failed {len(summary.failed)}, "
         f"questions {summary.questions} ({summary.seconds:.0f} s)")  # fmt: skip
    run = out / "run"
    with FeatureStore(feats) as fs:
        width = fs.shape(SECONDS, "visual_tokens")[-1]  # 512 for ViT-B/32; the model's width follows it
    args = ["--feats", str(feats), "--out", str(run), "--epochs", str(o.epochs), "--seconds", str(o.seconds)]
    args += ["--dim", str(width), *o.train_args]
    echo(f"[3/3] avaf-train {' '.join(args)}")
    done = subprocess.run([sys.executable, *TRAIN, *args], check=False)
    if done.returncode != 0:
        raise AvafError(f"{run}: avaf-train failed with exit status {done.returncode} (its error is above)")
    echo(f"outputs: videos and annotations {out / 'synth'}, features {feats}, run folder {run}")
    return {"feats": str(feats), "run": str(run), "results": str(run / "results.json"), "synth": synth}


def _with_runtime(cfg: ExtractConfig, in_process: bool, seconds: int) -> ExtractConfig:
    """One encoder call holds videos_per_call short clips: passes of exactly that many frames (encoders pad
    every pass to batch_size, so a larger batch would only encode padding). Without `in_process`, Ray
    whatever the set's size (as avaf-extract chooses it for a real job: `pipeline.choose_mode`)."""
    batch = min(cfg.runtime.batch_size, cfg.runtime.videos_per_call * seconds)
    mode = {"in_process": True} if in_process else {"in_process": None, "local_ray_min_videos": 0}
    return replace(cfg, runtime=replace(cfg.runtime, **mode, batch_size=batch))
