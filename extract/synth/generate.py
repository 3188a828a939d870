"""A generated MUSIC-AVQA look-alike with known answers: real mp4 files and MUSIC-AVQA-format annotations.

MUSIC-AVQA's videos are not on every machine; this set lets the whole toolkit (avaf-extract, avaf-train,
avaf-eval) be run and judged end to end (docs/extraction.md, "A generated set with known answers").
`generate` writes `videos/<id>.mp4` (H.264 + AAC, `render.py`; 8-digit ids like the real videos, so the
questions count as MUSIC-AVQA-Real), `annotations/avqa-{train,val,test}.json` in the released format
(DESIGN.md §4; videos split in order: train, then val, then test) and `scenes.json`, every scene's ground
truth. Video i is drawn from `numpy.random.default_rng([seed, i])` alone: the same seed gives the same
scenes, questions, annotation bytes and mp4 bytes, however many worker processes render the videos.

    avaf-synth --out synth --num-videos 200 --seed 0            # 200 ten-second videos
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from avaf.extract.synth.questions import questions_for
from avaf.extract.synth.render import write_video
from avaf.extract.synth.scene import Scene, make_scene
from avaf.shared.avqa.annotations import SPLITS
from avaf.shared.files import atomic_path, check_fresh_output, write_text

logger = logging.getLogger(__name__)

DEFAULT_SPLITS = (0.7, 0.1, 0.2)  # MUSIC-AVQA's train / val / test shares
SET_FILES = ("videos", "annotations", "scenes.json")  # what `generate` writes into its folder


def split_sizes(n_videos: int, fractions: tuple[float, float, float] = DEFAULT_SPLITS) -> dict[str, int]:
    """Videos per split: val and test rounded (half up) from their fractions, train the rest.

    From 3 videos on, a split with a positive fraction gets at least one video, so no file is empty by chance.
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1):
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    val, test = (int(np.floor(n_videos * f + 0.5)) for f in fractions[1:])
    if n_videos >= 3:
        val, test = (max(n, 1) if f > 0 else n for n, f in zip((val, test), fractions[1:]))
        if fractions[0] > 0 and val + test >= n_videos:
            val -= 1  # leave train at least one video
    test = min(test, n_videos - val)
    return {"train": n_videos - val - test, "val": val, "test": test}


def video_scene(seed: int, index: int, seconds: tuple[int, int], size: tuple[int, int], fps: int) -> Scene:
    """Scene number `index` (0-based) of the set drawn with `seed`: its own generator, so order does not matter."""
    rng = np.random.default_rng([seed, index])
    duration = int(rng.integers(seconds[0], seconds[1] + 1))
    return make_scene(rng, video_id=f"{index + 1:08d}", duration=duration, size=size, fps=fps)


def annotation_row(video_id: str, question_id: int, question: dict) -> dict:
    """A question as a row of a released MUSIC-AVQA file (the same keys in the same order)."""
    return {
        "video_id": video_id,
        "question_id": question_id,
        "type": json.dumps(question["type"]),
        "question_content": question["template"],
        "templ_values": json.dumps(question["values"]),
        "question_deleted": 0,
        "anser": question["answer"],
    }


def _render_one(job: tuple) -> float:
    """One video, under a temporary name until complete (a full disk leaves no half-written mp4)."""
    seed, index, seconds, size, fps, path = job
    with atomic_path(path, durable=False) as tmp:
        return write_video(video_scene(seed, index, seconds, size, fps), tmp)


def _render_all(jobs: list[tuple], workers: int, progress: bool) -> list[float]:
    bar = tqdm(total=len(jobs), unit="video", disable=not progress)
    try:
        if workers <= 1:
            gains = []
            for job in jobs:
                gains.append(_render_one(job))
                bar.update()
            return gains
        with ProcessPoolExecutor(max_workers=workers) as pool:
            gains = []
            for gain in pool.map(_render_one, jobs, chunksize=4):
                gains.append(gain)
                bar.update()
            return gains
    finally:
        bar.close()


def _write_json(path: Path, value: object) -> None:
    write_text(path, json.dumps(value, indent=1, ensure_ascii=False) + "\n")


def _write_annotations(folder: Path, scenes: list[Scene], split_of: list[str]) -> tuple[dict, dict]:
    """avqa-{train,val,test}.json; question ids count up from 0 over the videos in order."""
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    next_id = 0
    for scene, split in zip(scenes, split_of):
        for question in questions_for(scene):
            rows[split].append(annotation_row(scene.video_id, next_id, question))
            next_id += 1
    paths = {s: folder / f"avqa-{s}.json" for s in SPLITS}
    for s in SPLITS:
        _write_json(paths[s], rows[s])
    return {s: str(p) for s, p in paths.items()}, {s: len(rows[s]) for s in SPLITS}


@dataclass(frozen=True)
class SynthSpec:
    """What a generated set is: the same spec gives the same videos and annotation bytes.

    seconds: each video's length is drawn uniformly from [min, max] whole seconds; size: (width, height).
    """

    videos: int
    seed: int = 0
    seconds: tuple[int, int] = (10, 10)
    size: tuple[int, int] = (224, 224)
    fps: int = 8
    splits: tuple[float, float, float] = DEFAULT_SPLITS

    def __post_init__(self) -> None:
        if self.videos < 1:
            raise ValueError(f"videos must be at least 1, got {self.videos}")
        if not 3 <= self.seconds[0] <= self.seconds[1]:
            raise ValueError(f"seconds must be (min, max) with 3 <= min <= max, got {self.seconds}")
        w, h = self.size
        if w % 2 or h % 2 or min(self.size) < 48:
            raise ValueError(f"frame size must be even and at least 48x48 (H.264 4:2:0), got {w}x{h}")
        if self.fps < 1:
            raise ValueError(f"fps must be at least 1, got {self.fps}")


def generate(
    out_dir: str | Path,
    spec: SynthSpec,
    workers: int | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> dict:
    """Write the set `spec` describes under `out_dir`; returns its paths and counts.

    workers: processes rendering videos (default: the CPUs this process may use); the output does not
    depend on it. A folder that already holds a set (`SET_FILES`) is refused unless `overwrite`, which
    deletes it first (so no video of the old set stays beside the new ones).
    """
    out = check_fresh_output(out_dir, "a generated set", SET_FILES, overwrite, "choose a new --out")
    (out / "videos").mkdir(exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    n_videos, seed = spec.videos, spec.seed
    sizes = split_sizes(n_videos, spec.splits)
    split_of = [s for s in SPLITS for _ in range(sizes[s])]
    scenes = [video_scene(seed, i, spec.seconds, spec.size, spec.fps) for i in range(n_videos)]
    paths = [out / "videos" / f"{scene.video_id}.mp4" for scene in scenes]
    jobs = [(seed, i, spec.seconds, spec.size, spec.fps, str(p)) for i, p in enumerate(paths)]
    workers = workers or len(os.sched_getaffinity(0))
    logger.info("rendering %d videos into %s with %d workers", n_videos, out / "videos", workers)
    gains = _render_all(jobs, min(workers, n_videos), progress)
    annotations, counts = _write_annotations(out / "annotations", scenes, split_of)
    described = [
        scene.to_dict() | {"split": sp, "mix_gain": g} for scene, sp, g in zip(scenes, split_of, gains)
    ]
    _write_json(
        out / "scenes.json", {"format": "avaf-synth-scenes", "version": 1, "seed": seed, "scenes": described}
    )
    summary = {
        "videos": [str(p) for p in paths],
        "annotations": annotations,
        "scenes": str(out / "scenes.json"),
        "videos_per_split": sizes,
        "questions_per_split": counts,
    }
    logger.info("wrote %d videos and %s questions", n_videos, summary["questions_per_split"])
    return summary
