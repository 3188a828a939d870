"""The MUSIC-AVQA answer vocabulary: 42 answers in one fixed order, shared by every avaf model and checkpoint.

The order is shipped in `manifests/answers.json` (DESIGN.md §4), never rebuilt from a train file, so class index
i means the same answer in every checkpoint. It is the order of first appearance in `json_update/avqa-train.json`,
the vocabulary of the public AVQA codebases (GeWu-Lab's MUSIC-AVQA dataloader, TSPM, PSTP-Net, AVAF-Net, QA-TIGER);
the manifest's `order` field says exactly where it was taken from.

    >>> from avaf.shared.avqa.answers import ANSWERS, answer_index
    >>> len(ANSWERS), ANSWERS[0], answer_index("yes")
    (42, 'two', 7)
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from avaf.shared.avqa.manifests import manifest_path
from avaf.shared.errors import AnnotationError

MANIFEST = "answers.json"
NUM_ANSWERS = 42


def _load_answers() -> tuple[str, ...]:
    path = manifest_path(MANIFEST)
    answers = json.loads(path.read_text(encoding="utf-8"))["answers"]
    if len(answers) != NUM_ANSWERS or len(set(answers)) != NUM_ANSWERS:
        raise ValueError(f"{path}: expected {NUM_ANSWERS} distinct answers, found {len(set(answers))}")
    return tuple(answers)


ANSWERS: tuple[str, ...] = _load_answers()
_INDEX = {answer: i for i, answer in enumerate(ANSWERS)}


def answer_index(answer: str, where: str = "") -> int:
    """Class index of `answer`; an answer outside the 42 is an AnnotationError naming `where` (file, row)."""
    index = _INDEX.get(answer)
    if index is None:
        prefix = f"{where}: " if where else ""
        raise AnnotationError(
            f"{prefix}unknown answer {answer!r}: not one of the {NUM_ANSWERS} MUSIC-AVQA answers ({MANIFEST})"
        )
    return index


def answer_indices(answers: Iterable[str], where: str = "") -> np.ndarray:
    """Class indices of many answers at once (int64); any answer outside the 42 is an AnnotationError
    naming `where` and up to five of them."""
    answers = list(answers)
    bad = sorted({a for a in answers if a not in _INDEX})
    if bad:
        prefix = f"{where}: " if where else ""
        raise AnnotationError(
            f"{prefix}answers outside the {NUM_ANSWERS} MUSIC-AVQA answers ({MANIFEST}): {bad[:5]}"
        )
    return np.fromiter((_INDEX[a] for a in answers), dtype=np.int64, count=len(answers))
