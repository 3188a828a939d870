"""Feature stores holding the tspm set, for the export tests (test_pack_layouts.py, test_packs_export.py).

Not a test file. Written by the real writer (shards, then build_store) with the set at its real row shapes and
tiny T; `stored` reads them back, `padded` is --pad-to's rule written out for the tests, `check_manifest`
recomputes MANIFEST.json's checksums from the files.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.schema import Encoder
from avaf.shared.store.sets import TSPM, TSPM_ARRAYS, tspm_array
from avaf.shared.store.writer import (
    QuestionFeatures,
    ShardWriter,
    VideoFeatures,
    complete_shards,
    new_shard_path,
    shard_dir,
)

VIDEOS = {"00000093": 2, "va00000005": 3, "esa00000001": 5}  # seconds: one short, one shorter, one longer
QUESTIONS = {  # question_id -> (video, text): json_update's int ids, no zero padding
    12: ("00000093", "How many sounding erhu in the video"),
    7: ("va00000005", "Is the violin on the left louder than the piano on the right"),
    49431: (
        "esa00000001",
        "What is the instrument on the left of the instrument that sounds first after the acoustic_guitar "
        "stops playing in the whole video",
    ),
}
PAD = 4
ENCODERS = {
    "audio": Encoder("vggish", "default", "a" * 64, library="avaf"),
    "frame": Encoder("ViT-L-14-336", "openai", "b" * 64, library="open_clip"),
    "tome": Encoder("vit_large_patch16_384", "augreg_in21k_ft_in1k", "c" * 64, library="timm"),
}
TEXT = Encoder("ViT-L-14-336", "openai", "b" * 64, library="open_clip")


def tspm_store(
    path: Path, prompt_for=(12, 49431), random=False, shapes=None, arrays=tuple(TSPM_ARRAYS)
) -> Path:
    """A store holding the tspm set (`arrays` of it), written by the real writer: the real row shapes unless
    `shapes` overrides some, prompts for the questions `prompt_for` (NaN for the others)."""
    rng = np.random.default_rng(25)
    shapes = {**{n: a.shape for n, a in TSPM_ARRAYS.items()}, **(shapes or {})}
    encoder = lambda n: Encoder(**{**vars(ENCODERS.get(n, TEXT)), "random": random})  # noqa: E731
    sets = {TSPM: {n: tspm_array(n, encoder(n), {"made": "by the test"}, shapes[n]) for n in arrays}}
    per_second = [n for n in arrays if TSPM_ARRAYS[n].table == "seconds"]
    per_question = [n for n in arrays if n not in per_second]
    writer = ShardWriter(new_shard_path(shard_dir(path)), {"test": 1}, None, ["tome"] if random else [], sets)
    with writer as w:
        for vid, t in VIDEOS.items():
            own = {n: rng.standard_normal((t, *shapes[n])).astype(np.float16) for n in per_second}
            w.add_video(tspm_video(vid, t, own))
        for qid, (vid, text) in QUESTIONS.items():
            own = {n: rng.standard_normal(shapes[n]).astype(np.float16) for n in per_question}
            if "prompt" in own and qid not in prompt_for:
                own["prompt"] = None
            w.add_question(tspm_question(qid, vid, text, own))
    build_store(complete_shards(shard_dir(path)), path)
    return path


def tspm_video(vid: str, t: int, arrays: dict) -> VideoFeatures:
    """A video of the tspm set only (no avaf arrays)."""
    return VideoFeatures(
        video_id=vid,
        source_path=f"/v/{vid}.mp4",
        visual_tokens=None,
        visual_pooled=None,
        audio=None,
        audio_valid=np.ones(t, bool),
        timestamp=np.arange(t) + 0.5,
        sets={TSPM: arrays},
    )


def tspm_question(qid: int, vid: str, text: str, arrays: dict) -> QuestionFeatures:
    return QuestionFeatures(qid, vid, "test", text, "Audio/Counting", "two", None, None, sets={TSPM: arrays})


def stored(store: Path) -> tuple[dict, dict]:
    """The store's tspm arrays: {name: {video_id: (T, ...)}} and {name: {question_id: row}} (float16)."""
    with FeatureStore(store) as fs:
        per_video = {
            n: {v: fs.video_array(v, TSPM, n) for v in fs.video_ids} for n in ("audio", "frame", "tome")
        }
        ids = fs.questions()["question_id"].tolist()
        per_q = {n: dict(zip(ids, fs.question_array(TSPM, n))) for n in ("sentence", "words", "prompt")}
    return per_video, per_q


def padded(array: np.ndarray, n: int = PAD) -> np.ndarray:
    """The rule written out for the test: short -> repeat the last second, long -> the first n seconds."""
    rows = [array[min(i, len(array) - 1)] for i in range(n)]
    return np.stack(rows)


def check_manifest(out: Path, others: set[str] = frozenset()) -> dict:
    """MANIFEST.json lists every file written (all but `others`, and nothing else) with the sha256 of its
    bytes."""
    manifest = json.loads((out / "MANIFEST.json").read_text())
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {
        "MANIFEST.json",
        *others,
    }
    assert set(manifest["files"]) == on_disk
    for rel, sha in manifest["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == sha, rel
    return manifest
