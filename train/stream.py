"""Training from a feature file larger than memory: splits streamed in blocks of videos (issue 13).

MUSIC-AVQA's visual tokens are ~29 GB; a 24 GB machine cannot hold them. When the splits need more than
the memory budget (`--memory-budget`, by default half of what this process may use: the smaller of the
machine's available memory and its cgroup limit), each split becomes a `StreamedSplit`:

* Small per-question and per-second arrays stay in memory: sentences, answers, offsets and the VGGish audio
  (0.5% of the file at MUSIC-AVQA's shape: 256 B per second against 51 kB of visual tokens).
* The visual tokens are read in blocks of consecutive videos of about `block_bytes` each, one large
  coalesced read per block (`FeatureStore.load_videos`), with the word features of the block's questions,
  by a background thread that keeps `prefetch` blocks ahead of the model. At most prefetch + 1 blocks are
  alive: memory is bounded by the budget whatever the file's size.
* Each training epoch cuts the blocks at a random video (so their borders move from epoch to epoch), visits
  them in a random order and shuffles the questions inside each block. Batches never mix two blocks, so the
  last batch of a block may be short. With one block the epoch is the in-memory epoch, batch for batch.

Evaluation reads the blocks in file order and puts every prediction back at its question's place: the same
predictions as in memory, up to the float rounding of batches that differ at block borders.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from avaf.shared.store import schema
from avaf.shared.store.reader import FeatureStore

from .data import SplitData, load_split

log = logging.getLogger(__name__)

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_bytes(text: str) -> int:
    """ "6G", "500M", "1.5G", "123456" -> bytes (binary units, an optional trailing B or iB)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.IGNORECASE)
    if m is None:
        raise ValueError(f"memory budget {text!r}: expected auto, or a size such as 6G, 500M or 123456")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def _read_int(path: str) -> int | None:
    try:
        value = Path(path).read_text().split()[0]
    except (OSError, IndexError):
        return None
    return None if value == "max" else int(value)


def memory_available() -> int:
    """Bytes this process may still use: MemAvailable, less where a cgroup (v1 or v2) limits it further."""
    meminfo = Path("/proc/meminfo")
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    try:
        groups = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return available
    for line in groups:
        _, controllers, group = line.split(":", 2)
        if "memory" in controllers.split(","):  # v1
            base = f"/sys/fs/cgroup/memory{group}"
            limit, used = (
                _read_int(f"{base}/memory.limit_in_bytes"),
                _read_int(f"{base}/memory.usage_in_bytes"),
            )
        elif controllers == "":  # v2
            base = f"/sys/fs/cgroup{group}"
            limit, used = _read_int(f"{base}/memory.max"), _read_int(f"{base}/memory.current")
        else:
            continue
        if limit is not None and used is not None and limit < 1 << 60:
            available = min(available, max(0, limit - used))
    return available


#: what "auto" leaves to the model's training: AVAF-Net at batch 32 on a CPU peaks at ~4.6 GB
#: (tests/benchmarks/bench_train_step.py), features aside
TRAINING_RESERVE = 6 << 30


def resolve_budget(text: str) -> int:
    """The memory budget in bytes: `--memory-budget`, or for "auto" what this process may use less
    TRAINING_RESERVE, and at least a quarter of it."""
    if str(text).strip().lower() != "auto":
        return parse_bytes(text)
    available = memory_available()
    return max(available // 4, available - TRAINING_RESERVE)


def visual_bytes(fs: FeatureStore, split: str, subset: str | None) -> int:
    """Bytes of visual tokens the split's questions need in memory (each video once)."""
    q = fs.questions_with_videos(split=split, subset=subset)
    row = {v: i for i, v in enumerate(fs.video_ids)}
    rows = np.array([row[v] for v in set(q["video_id"])], dtype=np.int64)
    per_second = int(np.prod(fs.shape(schema.SECONDS, "visual_tokens")[1:])) * 2
    return int(fs.videos["length"][rows].sum()) * per_second


class StreamedSplit:
    """One split whose visual tokens stay in the file; `parts` yields it block by block (module doc).

    Has the per-question attributes of `SplitData` that training and evaluation read for the whole split
    (answer, qtype, question_id, video_length, word_length, name, device, variant).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        split: str,
        subset: str | None,
        device: torch.device | str,
        variant: str = "paper",
        block_bytes: int = 512 << 20,
        prefetch: int = 1,
    ):
        self.path, self.block_bytes, self.prefetch = Path(path), int(block_bytes), max(0, int(prefetch))
        with FeatureStore(self.path) as fs:
            # everything but the visual tokens, in memory: the split loaded without its videos' tokens
            self.base = load_split(fs, split, subset, "cpu", variant, streamed=True)
            q = fs.questions_with_videos(split=split, subset=subset)
            row = {v: i for i, v in enumerate(fs.video_ids)}
            videos = sorted(set(q["video_id"]), key=row.__getitem__)  # file order: reads run forward
            self.videos = np.array(videos, dtype=object)
            position = {v: i for i, v in enumerate(videos)}
            self.question_video = np.array([position[v] for v in q["video_id"]], dtype=np.int64)  # (Q,)
            rows = np.array([row[v] for v in videos], dtype=np.int64)
            self.per_second = int(np.prod(fs.shape(schema.SECONDS, "visual_tokens")[1:])) * 2
            self.video_bytes = fs.videos["length"][rows].astype(np.int64) * self.per_second  # (V,)
        self.base.device = torch.device(device)
        self.name, self.device, self.variant = split, self.base.device, variant
        self.resident = 0  # bytes of blocks read and not yet released
        self.peak_resident = 0  # the most ever alive at once: at most (prefetch + 1) blocks
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str):  # answer, qtype, question_id, video_length, word_length, ...
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    @property
    def nbytes(self) -> int:
        """What stays in memory (the block budget comes on top)."""
        return self.base.nbytes

    def blocks(self, start: int = 0) -> list[np.ndarray]:
        """Video positions cut into blocks of about `block_bytes` (at least one video each), from `start`."""
        n = len(self.videos)
        order = np.roll(np.arange(n), -start) if n else np.arange(0)
        out, current, size = [], [], 0
        for v in order.tolist():
            if current and size + self.video_bytes[v] > self.block_bytes:
                out.append(np.array(current, dtype=np.int64))
                current, size = [], 0
            current.append(v)
            size += int(self.video_bytes[v])
        if current:
            out.append(np.array(current, dtype=np.int64))
        return out

    def parts(
        self, gen: torch.Generator | None = None, layout_seed: int = 0
    ) -> Iterator[tuple[SplitData, Tensor, Tensor]]:
        """(part, order, rows) per block: the block as a `SplitData`, the order to visit its questions in
        (shuffled by `gen`, else as stored), and the split rows of its questions.

        With `gen` the blocks are cut at a random video and visited in a random order drawn from
        `layout_seed` (`gen` itself draws only the order inside each block).
        """
        layout = np.random.default_rng(layout_seed)
        blocks = self.blocks(
            int(layout.integers(len(self.videos))) if gen is not None and len(self.videos) else 0
        )
        if gen is not None:
            blocks = [blocks[i] for i in layout.permutation(len(blocks))]
        by_block = np.full(len(self.videos), -1, dtype=np.int64)
        for b, videos in enumerate(blocks):
            by_block[videos] = b
        question_block = by_block[self.question_video]
        block_rows = [torch.from_numpy(np.flatnonzero(question_block == i)) for i in range(len(blocks))]
        self.resident = 0
        with FeatureStore(self.path) as fs, ThreadPoolExecutor(1, thread_name_prefix="avaf-stream") as pool:

            def read(i: int):
                return pool.submit(self._read, fs, blocks[i], block_rows[i])

            pending = [read(i) for i in range(min(self.prefetch + 1, len(blocks)))]
            for i in range(len(blocks)):
                part, size = pending.pop(0).result()
                try:
                    rows = block_rows[i]
                    if part is not None:
                        order = (
                            torch.randperm(len(rows), generator=gen)
                            if gen is not None
                            else torch.arange(len(rows))
                        )
                        yield part, order, rows
                finally:
                    del part
                    with self._lock:
                        self.resident -= size
                if i + self.prefetch + 1 < len(blocks):  # read ahead once this block is released
                    pending.append(read(i + self.prefetch + 1))

    def _read(self, fs: FeatureStore, videos: np.ndarray, rows: Tensor) -> tuple[SplitData | None, int]:
        """On the prefetch thread: the block's questions `rows` as a `SplitData` holding the block's visual
        tokens (one coalesced read) and its questions' words, with offsets into both; and its size."""
        size = int(self.video_bytes[videos].sum())
        with self._lock:
            self.resident += size
            self.peak_resident = max(self.peak_resident, self.resident)
        if not len(rows):
            return None, size
        bulk = fs.load_videos(self.videos[videos].tolist(), fields=("visual_tokens",))
        visual = torch.from_numpy(bulk.arrays["visual_tokens"])
        if self.device.type == "cuda":  # batches go to the GPU from pinned memory (gather)
            visual = visual.pin_memory()
        base, r = self.base, rows.numpy()
        per_question = {
            f.name: getattr(base, f.name)[rows]
            for f in dataclasses.fields(SplitData)
            if isinstance(getattr(base, f.name), Tensor) and f.name not in ("visual", "audio", "words")
        }
        words, word_offset = fs.load_words(
            per_question["word_offset"].numpy(), per_question["word_length"].numpy()
        )
        first = [int(bulk.offset[bulk.index[v]]) for v in self.videos[self.question_video[r]]]
        per_question["video_offset"] = torch.tensor(first, dtype=torch.int64)
        per_question["word_offset"] = torch.from_numpy(word_offset)
        part = dataclasses.replace(
            base,
            visual=visual,
            words=torch.from_numpy(words),
            question_id=base.question_id[r],
            **per_question,
        )
        return part, size


def open_splits(
    path: str | os.PathLike,
    splits: list[str],
    subset: str | None,
    device: torch.device | str,
    variant: str,
    memory_budget: str = "auto",
) -> dict[str, SplitData | StreamedSplit]:
    """The splits in memory when their visual tokens fit `memory_budget` together, else each streamed in
    blocks of a quarter of the budget (two alive per split: the one in use and the one read ahead)."""
    budget = resolve_budget(memory_budget)
    with FeatureStore(path) as fs:  # one open (and validation) of the file, whichever way it goes
        need = sum(visual_bytes(fs, s, subset) for s in splits)
        if need <= budget:
            return {s: load_split(fs, s, subset, device, variant) for s in splits}
    log.warning(
        "%s: the visual tokens need %.1f GB, more than the memory budget of %.1f GB: streaming them from "
        "the file in blocks (--memory-budget to change)",
        path, need / 1e9, budget / 1e9,
    )  # fmt: skip
    block = max(1, budget // 4)
    return {s: StreamedSplit(path, s, subset, device, variant, block) for s in splits}
