"""One table, both variants (docs/training.md "Variants"): `paper` and `authors` on one generated set.

A script, not a test. It writes one feature store of generated scenes whose answers are known, trains
both variants on it with `avaf.train.loop.train` (the checkpoint selected on val, test reported at it),
and prints the paper's table for both with Audio-Visual Temporal as its own column, beside the majority
answer per type (the prior a model blind to the inputs reaches).

    python tests/benchmarks/bench_variants.py                 # ~3.5 min on one CPU thread
    python tests/benchmarks/bench_variants.py --videos 400 --epochs 15   # ~1 min

The scenes (T = 8 seconds, a 2 x 3 grid of 6 patches + CLS, D = 32): 2-4 of 6 instruments are visible,
each on its own patch (a patch carries a fixed vector for its place, as CLIP's patch tokens carry where
they are, plus the instrument's look); 2-3 of them sound, one block of 1-2 seconds each, in random order
with silence between (audio: the sum of the sounding instruments' signatures; the sounding patch gets a
"playing" cue). Five question types, each with MUSIC-AVQA's template:

    Audio/Counting            How many instruments are sounding in the video      two / three
    Visual/Counting           How many instruments are in the video               two / three / four
    Visual/Location           Where is the <Object>                               left / middle / right
    Audio-Visual/Existential  Is the <Object> in the video playing                yes / no
    Audio-Visual/Temporal     What is the <TH> instrument that comes in           the first / last one to sound

Only time order answers the temporal questions (the set of sounding seconds is the same whatever the
order). Word features follow the store's layout: a start-token row (the same for every question), one
row per BPE token (an instrument's name is two tokens, as "acoustic_guitar" is), an end-token row that
is also the sentence feature; so the authors' variant reads its words 1..n and its start-token sentence
exactly as it does on real features (train/data.py).

Both variants get the same model sizes, learning rate, epochs and no lr decay (`--lr`, `--epochs`); batch
size and seed are each variant's recipe (paper 32 / 0, authors 64 / 42) and so are the loss weights.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

T, N, D = 8, 6, 32
INSTRUMENTS = ("cello", "piano", "violin", "flute", "trumpet", "accordion")
COLUMNS = ("left", "middle", "right")
COUNTS = ("zero", "one", "two", "three", "four")
TEMPLATES = {
    "Audio/Counting": "How many instruments are sounding in the video",
    "Visual/Counting": "How many instruments are in the video",
    "Visual/Location": "Where is the <Object>",
    "Audio-Visual/Existential": "Is the <Object> in the video playing",
    "Audio-Visual/Temporal": "What is the <TH> instrument that comes in",
}


def _vocabulary(rng: np.random.Generator) -> dict:
    words = {w for t in TEMPLATES.values() for w in t.split() if not w.startswith("<")}
    words |= {"first", "last", "<sot>"}
    return {
        "word": {w: rng.standard_normal(D) for w in sorted(words)},
        "name": {k: rng.standard_normal((2, D)) for k in INSTRUMENTS},  # two BPE tokens per name
        "look": rng.standard_normal((len(INSTRUMENTS), D)) * 1.5,
        "sound": np.abs(rng.standard_normal((len(INSTRUMENTS), 128))) * 2,
        "place": rng.standard_normal((N, D)),
        "playing": rng.standard_normal(D) * 1.5,
        "cls": rng.standard_normal(D),
    }


def _scene(rng: np.random.Generator) -> dict:
    """Visible instruments with their patch, and the sounding ones as (instrument, onset, length) in order."""
    visible = rng.choice(len(INSTRUMENTS), size=int(rng.integers(2, 5)), replace=False)
    patches = rng.choice(N, size=len(visible), replace=False)
    k = int(rng.integers(2, min(3, len(visible)) + 1))
    sounding = rng.permutation(visible)[:k]  # in onset order
    lengths = rng.integers(1, 3, size=k)
    gaps = rng.multinomial(T - lengths.sum() - (k - 1), np.ones(k + 1) / (k + 1))[:k]
    blocks, t = [], 0
    for inst, length, gap in zip(sounding, lengths, gaps):
        t += int(gap)
        blocks.append((int(inst), t, int(length)))
        t += int(length) + 1
    return {"visible": dict(zip(visible.tolist(), patches.tolist())), "blocks": blocks}


def _features(scene: dict, vocab: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.empty((T, N + 1, D))
    tokens[:, 0] = vocab["cls"]
    tokens[:, 1:] = vocab["place"] + 0.3 * rng.standard_normal((T, N, D))
    audio = 0.2 * np.abs(rng.standard_normal((T, 128)))
    for inst, patch in scene["visible"].items():
        tokens[:, 1 + patch] += vocab["look"][inst]
    for inst, onset, length in scene["blocks"]:
        tokens[onset : onset + length, 1 + scene["visible"][inst]] += vocab["playing"]
        audio[onset : onset + length] += vocab["sound"][inst]
    return tokens, audio


def _questions(scene: dict, rng: np.random.Generator) -> list[tuple[str, dict, str]]:
    """(type, placeholder values, answer) for the five types."""
    visible, order = scene["visible"], [b[0] for b in scene["blocks"]]
    shown = int(rng.choice(list(visible)))
    asked = int(rng.choice(list(visible))) if rng.random() < 0.75 else int(rng.integers(len(INSTRUMENTS)))
    th = str(rng.choice(["first", "last"]))
    return [
        ("Audio/Counting", {}, COUNTS[len(order)]),
        ("Visual/Counting", {}, COUNTS[len(visible)]),
        ("Visual/Location", {"Object": INSTRUMENTS[shown]}, COLUMNS[visible[shown] % 3]),
        ("Audio-Visual/Existential", {"Object": INSTRUMENTS[asked]}, "yes" if asked in order else "no"),
        ("Audio-Visual/Temporal", {"TH": th}, INSTRUMENTS[order[0] if th == "first" else order[-1]]),
    ]


def _words(template: str, values: dict, vocab: dict, rng: np.random.Generator) -> tuple[str, np.ndarray]:
    """Filled text, and word rows: start token, BPE tokens (a name is two), end token (= the sentence)."""
    text, rows = [], [vocab["word"]["<sot>"]]
    for w in template.split():
        if w.startswith("<"):
            value = values[w[1:-1]]
            text.append(value)
            rows += list(vocab["name"][value]) if value in vocab["name"] else [vocab["word"][value]]
        else:
            text.append(w)
            rows.append(vocab["word"][w])
    rows = np.stack(rows) + 0.1 * rng.standard_normal((len(rows), D))
    rows = np.concatenate((rows, rows[1:].mean(axis=0, keepdims=True)))  # end token: the whole question
    return " ".join(text), rows


def write_store(path: Path, videos: int, seed: int = 0) -> float:
    """Write the generated feature store (60 / 20 / 20 % of the videos for train / val / test) at `path`;
    returns the order-blind accuracy on the test temporal questions (1 / the instruments heard, averaged)."""
    from avaf.shared.store import QuestionFeatures, ShardWriter, VideoFeatures, build_store
    from avaf.shared.store.writer import complete_shards, new_shard_path, shard_dir

    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng)
    folder, blind = shard_dir(path), []
    with ShardWriter(
        new_shard_path(folder), {"generated": "bench_variants"}, random_weights=["generated"]
    ) as w:
        for i in range(videos):
            scene = _scene(rng)
            tokens, audio = _features(scene, vocab, rng)
            vid = f"{i:08d}"
            f16 = np.float16
            w.add_video(
                VideoFeatures(
                    vid,
                    f"/generated/{vid}.mp4",
                    tokens.astype(f16),
                    tokens[:, 0].astype(f16),
                    audio.astype(f16),
                    np.ones(T, bool),
                    np.arange(T) + 0.5,
                )  # fmt: skip
            )
            split = "train" if i < 0.6 * videos else "val" if i < 0.8 * videos else "test"
            if split == "test":
                blind.append(1 / len(scene["blocks"]))
            for k, (qtype, values, answer) in enumerate(_questions(scene, rng)):
                text, rows = _words(TEMPLATES[qtype], values, vocab, rng)
                w.add_question(
                    QuestionFeatures(
                        5 * i + k, vid, split, text, qtype, answer, rows.astype(f16), rows[-1].astype(f16)
                    )
                )
    build_store(complete_shards(folder), path)
    return 100 * float(np.mean(blind))


def majority_row(path: Path) -> dict:
    """Per type, the accuracy on test of the most frequent train answer of that type."""
    from avaf.shared.avqa.question_types import type_table
    from avaf.shared.store import FeatureStore

    with FeatureStore(path) as fs:
        train, test = fs.questions(split="train"), fs.questions(split="test")
    best = {}
    for t in set(train["type"]):
        answers, counts = np.unique(train["answer"][train["type"] == t], return_counts=True)
        best[t] = answers[counts.argmax()]
    return type_table(list(test["type"]), [a == best[t] for t, a in zip(test["type"], test["answer"])])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=1000, help="5 questions each")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1, help="1: the model is tiny; more threads only contend")
    p.add_argument("--seed", type=int, default=0, help="of the generated set")
    args = p.parse_args()

    from avaf.shared.avqa.question_types import markdown_table
    from avaf.train.config import load_config
    from avaf.train.loop import train

    work = Path(tempfile.mkdtemp(prefix="bench_variants_"))
    feats = work / "feats.h5"
    blind = write_store(feats, args.videos, args.seed)
    rows, notes = {"majority answer per type": majority_row(feats)}, []
    for variant in ("paper", "authors"):
        cfg = load_config(
            None,
            {"model.variant": variant, "model.dim": D, "model.ffn_dim": 4 * D, "model.max_seconds": T,
             "optim.lr": args.lr, "optim.epochs": args.epochs, "optim.lr_step_epochs": 10 * args.epochs,
             "run.threads": args.threads, "run.device": "cpu", "data.feats": str(feats),
             "run.out_dir": str(work / variant)},
        )  # fmt: skip
        start = time.perf_counter()
        results = train(cfg, progress=False)
        minutes = (time.perf_counter() - start) / 60
        rows[f"{variant} (test)"] = results["tables"]["test"]
        notes.append(
            f"{variant}: batch {cfg.optim.batch_size}, seed {cfg.optim.seed}, alpha {cfg.loss.alpha}, "
            f"best epoch {results['best_epoch']}/{args.epochs} (on val), {minutes:.1f} min"
        )
    print(f"{args.videos} generated videos, {5 * args.videos} questions (60/20/20 % train/val/test), {work}")
    print("\n".join(notes))
    print(f"Audio-Visual Temporal blind to order (a guess among the instruments heard): {blind:.1f}\n")
    print(markdown_table(rows, digits=1))


if __name__ == "__main__":
    main()
