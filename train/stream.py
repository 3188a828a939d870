"""A feature file larger than memory: splits streamed in blocks of videos (docs/training.md, "The recipe").

MUSIC-AVQA's visual tokens are ~29 GB; a 24 GB machine cannot hold them. When the splits need more than
the memory budget (`--memory-budget`; "auto": what this process may use, the smaller of the machine's
available memory and its cgroup limit, less 6 GiB for training, and at least a quarter of it), each split
is a `SplitData` whose features are `StreamedFeatures`: the per-question arrays and the VGGish audio stay
in memory (0.5% of the file), and the visual tokens and words are read in blocks of consecutive videos of
about `block_bytes`, one coalesced read per block, by a thread that keeps `prefetch` blocks ahead (at most
prefetch + 1 alive). Each epoch cuts the blocks at a random video, visits them in a random order and
shuffles inside each; batches never mix blocks. With one block the epoch is the in-memory one, batch for
batch. Evaluation reads the blocks in file order: the in-memory predictions, up to float rounding.
"""

from __future__ import annotations

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
from avaf.shared.store.index import QuestionIndex
from avaf.shared.store.reader import FeatureStore

from .data import Features, SplitData, columns, load_split, placer, split_data, split_index

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


def visual_bytes(fs: FeatureStore, split: str, subset: str | None, index: QuestionIndex | None = None) -> int:
    """Bytes of visual tokens the split's questions need in memory (each video once)."""
    index = index or QuestionIndex.build(fs, split, subset)
    per_second = int(np.prod(fs.shape(schema.SECONDS, columns(fs)["visual"])[1:])) * 2
    return int(index.seconds_length[np.unique(index.video)].sum()) * per_second


class StreamedFeatures:
    """A split's visual tokens and words, left in the file and read block by block (module doc)."""

    nbytes = 0  # nothing held between parts; the blocks in flight are `resident`

    def __init__(
        self, fs: FeatureStore, index: QuestionIndex, device: torch.device, block_bytes: int, prefetch: int
    ):
        self.path, self.index, self.device = fs.path, index, device
        self.block_bytes, self.prefetch = int(block_bytes), max(0, int(prefetch))
        self.videos = np.unique(index.video)  # (V,) positions in index.video_ids of the videos looked at
        self.question_video = np.searchsorted(self.videos, index.video)  # (Q,) position in `videos`
        self.key = columns(fs)
        per_second = int(np.prod(fs.shape(schema.SECONDS, self.key["visual"])[1:])) * 2
        self.video_bytes = index.seconds_length[self.videos] * per_second  # (V,)
        self.resident = 0  # bytes of blocks read and not yet released
        self.peak_resident = 0  # the most ever alive at once: at most (prefetch + 1) blocks
        self._lock = threading.Lock()

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
        self, questions: int, gen: torch.Generator | None = None, layout_seed: int = 0
    ) -> Iterator[tuple[Features, Tensor]]:
        """(features, rows) per block: the block's features and the split rows of its questions, in the order
        to visit them (shuffled by `gen`, else as stored). With `gen` the blocks are cut at a random video and
        visited in a random order drawn from `layout_seed` (`gen` draws only the order inside each block)."""
        blocks, block_rows = self._layout(gen is not None, layout_seed)
        self.resident = 0
        with FeatureStore(self.path) as fs, ThreadPoolExecutor(1, thread_name_prefix="avaf-stream") as pool:

            def read(i: int):
                return pool.submit(self._read, fs, blocks[i], block_rows[i])

            pending = [read(i) for i in range(min(self.prefetch + 1, len(blocks)))]
            for i, rows in enumerate(block_rows):
                part, size = pending.pop(0).result()
                try:
                    if part is not None:
                        yield (
                            part,
                            rows[torch.randperm(len(rows), generator=gen)] if gen is not None else rows,
                        )
                finally:
                    del part
                    with self._lock:
                        self.resident -= size
                if i + self.prefetch + 1 < len(blocks):  # read ahead once this block is released
                    pending.append(read(i + self.prefetch + 1))

    def _layout(self, shuffled: bool, layout_seed: int) -> tuple[list[np.ndarray], list[Tensor]]:
        """The blocks (video positions) in the order to visit them, and the split rows of their questions."""
        layout = np.random.default_rng(layout_seed)
        start = int(layout.integers(len(self.videos))) if shuffled and len(self.videos) else 0
        blocks = self.blocks(start)
        if shuffled:
            blocks = [blocks[i] for i in layout.permutation(len(blocks))]
        by_block = np.full(len(self.videos), -1, dtype=np.int64)
        for b, videos in enumerate(blocks):
            by_block[videos] = b
        question_block = by_block[self.question_video]
        return blocks, [torch.from_numpy(np.flatnonzero(question_block == i)) for i in range(len(blocks))]

    def _read(self, fs: FeatureStore, videos: np.ndarray, rows: Tensor) -> tuple[Features | None, int]:
        """On the prefetch thread: the block's visual tokens (one coalesced read) and the words of its
        questions `rows`, with each question's offsets into both; and the block's size."""
        size = int(self.video_bytes[videos].sum())
        with self._lock:
            self.resident += size
            self.peak_resident = max(self.peak_resident, self.resident)
        if not len(rows):
            return None, size
        index, held = self.index, self.videos[videos]  # positions in index.video_ids, this block's
        bulk = fs.load_videos([index.video_ids[v] for v in held.tolist()], fields=(self.key["visual"],))
        visual = torch.from_numpy(bulk.arrays[self.key["visual"]])
        if self.device.type == "cuda":  # batches go to the GPU from pinned memory (gather)
            visual = visual.pin_memory()
        r = rows.numpy()
        words, offset = fs.load_words(index.word_offset[r], index.word_length[r], self.key["words"])
        word_offset = np.zeros(len(index), dtype=np.int64)
        word_offset[r] = offset
        video_offset = index.packed_offset(held)[index.video]  # (Q,) -1 for the questions of other blocks
        return Features(
            visual, torch.from_numpy(words), torch.from_numpy(video_offset), torch.from_numpy(word_offset)
        ), size


def streamed_split(
    path: str | os.PathLike,
    split: str,
    subset: str | None,
    device: torch.device | str,
    block_bytes: int = 512 << 20,
    prefetch: int = 1,
) -> SplitData:
    """The split with everything but its visual tokens and words in memory (on the CPU; batches go to
    `device`), those read block by block from the file."""
    with FeatureStore(path) as fs:
        index = split_index(fs, split, subset)
        key = columns(fs)["audio"]
        audio = fs.load_videos(index.video_ids, fields=(key,)).arrays[key]
        device = torch.device(device)
        features = StreamedFeatures(fs, index, device, block_bytes, prefetch)
        return split_data(
            fs, split, device, index, placer(torch.device("cpu"), torch.device("cpu")), audio, features
        )


def open_splits(
    path: str | os.PathLike,
    splits: list[str],
    subset: str | None,
    device: torch.device | str,
    memory_budget: str = "auto",
) -> dict[str, SplitData]:
    """The splits in memory when their visual tokens fit `memory_budget` together, else each streamed in
    blocks of a quarter of the budget (two alive per split: the one in use and the one read ahead)."""
    budget = resolve_budget(memory_budget)
    with FeatureStore(path) as fs:  # one open (and validation) of the file, whichever way it goes
        indexes = {s: split_index(fs, s, subset) for s in splits}
        need = sum(visual_bytes(fs, s, subset, indexes[s]) for s in splits)
        if need <= budget:
            return {s: load_split(fs, s, subset, device, indexes[s]) for s in splits}
    log.warning(
        "%s: the visual tokens need %.1f GB, more than the memory budget of %.1f GB: streaming them from "
        "the file in blocks (--memory-budget to change)",
        path, need / 1e9, budget / 1e9,
    )  # fmt: skip
    block = max(1, budget // 4)
    return {s: streamed_split(path, s, subset, device, block) for s in splits}
