"""`avaf-demo`: the whole pipeline on one machine, on a generated music-scene set with known answers.

    avaf-demo --out demo/          # generate -> avaf-extract (local Ray) -> avaf-train -> the per-type table

Step 1 writes real mp4 files and MUSIC-AVQA-format annotations (`avaf.extract.synth.generate`); step 2
extracts features on a local Ray instance, as a real job runs (`--in-process`: without Ray), with the default
encoder weights when it can get them, and otherwise says loudly that it falls back to random encoders (the
feature file records it); step 3 runs `avaf-train` on the feature file in its own process: the file is the
whole interface between the stages (DESIGN.md §1).

A demo records what it is (`demo.json`: the set, the encoders, the exact avaf-extract command) before it
writes anything else, so the same command continues one that was stopped (Ctrl-C, a crash): a complete
generated set is reused (the same spec gives the same files: `generate`), extraction skips the videos of
complete shards (a shard holds one encoder call's videos: a stop loses at most those) and training resumes
from its last epoch. A folder holding a demo of another spec, or a demo's file names without a
`demo.json`, is refused unless `overwrite`, which deletes the demo's files (`DEMO_FILES`) and starts anew.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from avaf.extract.config import ClipConfig, ExtractConfig, InputConfig, VGGishConfig
from avaf.extract.encoders.weights import OFFLINE_FIX, WeightsUnavailable
from avaf.extract.pipeline import ExtractSummary, run_extract
from avaf.extract.synth.generate import SynthSpec, generate, split_sizes, video_scene
from avaf.shared.avqa.annotations import SPLITS
from avaf.shared.errors import AvafError, OutputError
from avaf.shared.files import check_fresh_output, write_text
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.schema import SECONDS

TRAIN = ("-m", "avaf.train")  # avaf-train in its own process: the feature file is the whole interface
RECORD = "demo.json"  # what the demo in a folder is: the same command continues it
DEMO_FILES = (RECORD, "synth", "feats.h5", "feats.h5.shards", "run")  # what a demo writes into its folder


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
        why = " ".join(str(e).replace(OFFLINE_FIX, "").split())  # the fix for this demo is below
        for i, line in enumerate(textwrap.wrap(why, 100 - len("!!! Why: "), break_on_hyphens=False)):
            echo(f"!!! {'Why: ' if i == 0 else '     '}{line}")
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

    def spec(self) -> dict:
        """What a demo's set and features are made from: a rerun with the same spec continues it (epochs,
        training config and --in-process may change: training resumes, the arrays are the same)."""
        keep = ("videos", "seconds", "seed", "weights", "clip_model")
        return {k: v for k, v in asdict(self).items() if k in keep}


def run_demo(
    out: str | Path,
    options: DemoOptions = DemoOptions(),
    echo: Callable[[str], None] = print,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Generate, extract, train, continuing the demo of the same spec that `out` may hold (stopped or
    finished); returns the paths of what was written and the results table. `progress`: the three steps'
    progress bars (avaf-demo -q: none, and avaf-train runs with -q)."""
    o = options
    out, record = open_demo(out, o.spec(), overwrite)
    synth = _generated_set(out / "synth", SynthSpec(o.videos, o.seed, (o.seconds, o.seconds)), echo, progress)
    echo(f"      questions per split: {synth['questions_per_split']}")
    if "encoders" in record:  # a demo continues with the encoders it started with, whatever is there now
        clip_pretrained, vggish_weights = record["encoders"]
    else:
        clip_pretrained, vggish_weights = choose_weights(o.weights, o.clip_model, echo)
    feats = out / "feats.h5"
    cfg = ExtractConfig(
        out=str(feats),
        input=InputConfig(
            videos=str(out / "synth" / "videos"), annotations=(str(out / "synth" / "annotations"),)
        ),
        clip=ClipConfig(model=o.clip_model, pretrained=clip_pretrained),
        vggish=VGGishConfig(weights=vggish_weights),
    )
    cfg = _with_runtime(cfg, o.in_process, o.seconds)
    command = extract_command(cfg)
    _write_record(out, record | {"encoders": [clip_pretrained, vggish_weights], "extract": command})
    echo(
        f"[2/3] avaf-extract: CLIP {o.clip_model} ({clip_pretrained}) + VGGish ({vggish_weights}) -> {feats}"
    )
    echo(f"      by hand, the same (it continues a stopped one): {command}")
    summary: ExtractSummary = run_extract(cfg, progress, echo=lambda line: echo(f"      {line}"))
    echo(f"      written {summary.written}, skipped {summary.skipped}, failed {len(summary.failed)}, "
         f"questions {summary.questions} ({summary.seconds:.0f} s)")  # fmt: skip
    run = out / "run"
    with FeatureStore(feats) as fs:
        width = fs.shape(SECONDS, "visual_tokens")[-1]  # 512 for ViT-B/32; the model's width follows it
    args = ["--feats", str(feats), "--out", str(run), "--epochs", str(o.epochs), "--seconds", str(o.seconds)]
    # a run of ~100 steps at the recipe's lr 1e-4, which needs no warm-up (docs/training.md): 150 would take it
    args += ["--dim", str(width), "--warmup-steps", "0", *o.train_args, *([] if progress else ["-q"])]
    args += (
        ["--resume"] if (run / "config.json").is_file() else []
    )  # a stopped run goes on from its last epoch
    echo(f"[3/3] avaf-train {' '.join(args)}")
    done = subprocess.run([sys.executable, *TRAIN, *args], check=False)
    if done.returncode != 0:
        raise AvafError(f"{run}: avaf-train failed with exit status {done.returncode} (its error is above)")
    echo(f"outputs: videos and annotations {out / 'synth'}, features {feats}, run folder {run}")
    return {"feats": str(feats), "run": str(run), "results": str(run / "results.json"), "synth": synth}


def open_demo(out: str | Path, spec: dict, overwrite: bool) -> tuple[Path, dict]:
    """The demo's folder (created) and its record: that of the demo of the same `spec` already there, which
    this run continues, or a new one, written before anything else. Refused, unless `overwrite` (which
    deletes the demo's files): a demo of another spec, and a demo's file names without a record (made by
    something else, or by an avaf without records: what they hold is unknown)."""
    out = Path(out)
    path = out / RECORD
    record = None if overwrite or not path.is_file() else _read_record(path)
    if record is None:
        what = "files a demo writes, but no demo.json"
        check_fresh_output(out, what, DEMO_FILES, overwrite, "choose a new --out")
        record = {"format": "avaf-demo", "version": 1, "spec": spec}
        _write_record(out, record)
    elif record["spec"] != spec:
        theirs = record["spec"]
        flag = {"videos": "num-videos"}  # the others are spelled as the spec's keys
        diff = ", ".join(
            f"--{flag.get(k, k.replace('_', '-'))} {theirs.get(k)} (asked: {v})"
            for k, v in spec.items()
            if theirs.get(k) != v
        )
        raise OutputError(
            f"{out}: holds a demo of another spec ({diff}); continue it with its own flags, choose a new "
            "--out, or pass --overwrite to replace it"
        )
    return out, record


def _read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OutputError(f"{path}: unreadable ({e}); choose a new --out, or pass --overwrite") from e
    if not isinstance(record, dict) or record.get("format") != "avaf-demo" or "spec" not in record:
        raise OutputError(f"{path}: not an avaf-demo record; choose a new --out, or pass --overwrite")
    return record


def _write_record(out: Path, record: dict) -> None:
    write_text(out / RECORD, json.dumps(record, indent=2) + "\n")


def _generated_set(folder: Path, spec: SynthSpec, echo: Callable[[str], None], progress: bool = True) -> dict:
    """The set `spec` describes in `folder`: the one there if it is complete and is that set, else
    generated (a partial one, left by a stopped demo, is replaced)."""
    found = _complete_set(folder, spec)
    if found is not None:
        echo(f"[1/3] {spec.videos} generated scenes of {spec.seconds[0]} s in {folder}: complete, reused")
        return found
    echo(f"[1/3] generating {spec.videos} scenes of {spec.seconds[0]} s with known answers -> {folder}")
    return generate(folder, spec, progress=progress, overwrite=True)


def _complete_set(folder: Path, spec: SynthSpec) -> dict | None:
    """What `generate` returned for the set in `folder` when it is complete and the one `spec` makes, else
    None. Complete: its scenes.json (written last) lists the spec's scenes, and every video and annotation
    file is there (each written under a temporary name until whole). The same spec gives the same bytes."""
    try:
        stored = json.loads((folder / "scenes.json").read_text())["scenes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    scenes = [
        video_scene(spec.seed, i, spec.seconds, spec.size, spec.fps).to_dict() for i in range(spec.videos)
    ]
    if [{k: v for k, v in s.items() if k not in ("split", "mix_gain")} for s in stored] != json.loads(
        json.dumps(scenes)
    ):
        return None
    videos = [folder / "videos" / f"{s['video_id']}.mp4" for s in scenes]
    annotations = {s: folder / "annotations" / f"avqa-{s}.json" for s in SPLITS}
    if not all(p.is_file() for p in [*videos, *annotations.values()]):
        return None
    return {
        "videos": [str(p) for p in videos],
        "annotations": {s: str(p) for s, p in annotations.items()},
        "scenes": str(folder / "scenes.json"),
        "videos_per_split": split_sizes(spec.videos, spec.splits),
        "questions_per_split": {s: len(json.loads(p.read_text())) for s, p in annotations.items()},
    }


def extract_command(cfg: ExtractConfig) -> str:
    """The avaf-extract command that runs `cfg`, the demo's settings and batch size included: typed by hand it
    continues the demo's extraction (a store refuses to mix shards made with another batch size)."""
    rt = cfg.runtime
    args = ["avaf-extract", "--videos", cfg.input.videos]
    args += [a for f in cfg.input.annotations for a in ("--annotations", f)]
    args += ["--out", cfg.out, "--clip-model", cfg.clip.model, "--clip-pretrained", cfg.clip.pretrained]
    args += ["--vggish-weights", cfg.vggish.weights, "--batch-size", str(rt.batch_size)]
    args += ["--shard-videos", str(rt.shard_videos)]
    args += ["--in-process"] if rt.in_process else ["--local-ray-min-videos", str(rt.local_ray_min_videos)]
    return shlex.join(args)


def _with_runtime(cfg: ExtractConfig, in_process: bool, seconds: int) -> ExtractConfig:
    """One encoder call holds videos_per_call short clips: passes of exactly that many frames (encoders pad
    every pass to batch_size, so a larger batch would only encode padding), and a shard holds one call's
    videos, so a stopped demo loses at most those. Without `in_process`, Ray whatever the set's size (as
    avaf-extract chooses it for a real job: `pipeline.choose_mode`)."""
    rt = cfg.runtime
    batch = min(rt.batch_size, rt.videos_per_call * seconds)
    mode = {"in_process": True} if in_process else {"in_process": None, "local_ray_min_videos": 0}
    return replace(cfg, runtime=replace(rt, **mode, batch_size=batch, shard_videos=rt.videos_per_call))
