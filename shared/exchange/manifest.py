"""MANIFEST.json of a feature-pack export: what proves which features produced a number.

For each file written, its sha256; for each array, the store array it came from, the encoder (model,
pretrained tag, sha256 of the weights loaded, random flag), the preprocessing, the shapes and dtypes, and the
padding; a loud warning first when any encoder was random. `save_npy` hashes a file while writing it, so a
34 GB export is not read twice; `file_sha256` hashes what is already on disk (the STG HDF5 files).

    sha = save_npy(out / "vggish" / "00000093.npy", audio)   # the file appears whole or not at all
    write_manifest(out, manifest)                             # out/MANIFEST.json
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from avaf.shared.files import atomic_path
from avaf.shared.store.schema import Encoder, FeatureArray

MANIFEST = "MANIFEST.json"
FORMAT = "avaf-feature-export"
VERSION = 1
RANDOM_WARNING = (
    "features from randomly initialised encoders ({names}): for tests and smoke runs only; never train on "
    "them or report a number from them"
)
PAD_RULE = (
    "a video shorter than pad_to seconds repeats its last second (frames and audio alike); a longer one "
    "keeps its first pad_to seconds"
)
BLOCK = 1 << 20


class _HashingFile:
    """A binary file that hashes what is written to it (np.save writes through `write`)."""

    def __init__(self, fh) -> None:
        self.fh, self.sha = fh, hashlib.sha256()

    def write(self, data) -> int:
        self.sha.update(data)
        return self.fh.write(data)


def save_npy(path: Path, array: np.ndarray) -> str:
    """np.save under a temporary name, renamed when whole (no fsync per file: an export writes one per video
    and per question); returns the file's sha256."""
    with atomic_path(path, durable=False) as tmp, open(tmp, "wb") as fh:
        hashing = _HashingFile(fh)
        np.save(hashing, np.ascontiguousarray(array))
    return hashing.sha.hexdigest()


def file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            sha.update(block)
    return sha.hexdigest()


def random_encoders(random_weights: list[str], arrays: list[FeatureArray]) -> list[str]:
    """Every encoder on random weights: those the store's root attribute names, and those of the arrays."""
    named = set(random_weights) | {a.encoder.model or f"{a.set}/{a.name}" for a in arrays if a.encoder.random}
    return sorted(named)


def array_record(
    a: FeatureArray, path: str, per: str, written: tuple, dtype: str, pad_to: int | None
) -> dict:
    """One exported array: where it went, where it came from, what made it, and its padding."""
    encoder: Encoder = a.encoder
    return {
        "path": path,
        "per": per,  # one file (or HDF5 dataset) per video or per question
        "source": f"/{a.path} (feature set {a.set}, array {a.name})",
        "encoder": vars(encoder).copy(),
        "preprocessing": a.preprocessing,
        "doc": a.doc,
        "stored": {"dtype": "float16", "row_shape": list(a.shape)},
        "written": {"dtype": dtype, "shape": list(written)},  # "T": a video's seconds
        "padding": {"pad_to": pad_to, "rule": PAD_RULE} if per == "video" and pad_to else None,
    }


def header(export_format: str, random: list[str], avaf_version: str, source: str) -> dict:
    """The manifest's first keys: a warning first when any encoder was random."""
    head = {"WARNING": RANDOM_WARNING.format(names=", ".join(random))} if random else {}
    return head | {
        "format": FORMAT,
        "version": VERSION,
        "layout": export_format,
        "random_weights": bool(random),
        "random_encoders": random,
        "avaf_version": avaf_version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source,
    }


def write_manifest(out: Path, manifest: dict) -> Path:
    path = out / MANIFEST
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    return path
