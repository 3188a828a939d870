"""MUSIC-AVQA annotation files, as released, parsed into `Question`s (DESIGN.md §4).

Every released flavour is read: the original `json/`, the corrected `json_update/` that recent papers use,
the real/fake splits and the MUSIC-AVQA-v2.0 files (extra keys, rows without `question_id`, float ids,
`unmatch_audio` as `audio_video_id`). The question text is the string the public AVQA code feeds CLIP
(placeholders filled from `templ_values`, the final question mark dropped), so avaf's question features
match theirs. The rules for text, synthetic ids and duplicate rows: docs/schema.md, "Questions: text, ids,
duplicates".

    >>> from avaf.shared.avqa.annotations import load_annotations, select_subset
    >>> test = load_annotations("json_update/avqa-test.json")  # split "test" from the file name
    >>> real = select_subset(test, "real")                       # MUSIC-AVQA-Real: 7,365 questions
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from avaf.shared.avqa.answers import answer_index
from avaf.shared.avqa.question_types import TYPES, type_index, type_name
from avaf.shared.errors import AnnotationError

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SUBSETS = ("all", "real")
PLACEHOLDERS = ("Object", "LR", "LRer", "FL", "LL", "TH", "BA")
REQUIRED_KEYS = ("video_id", "type", "question_content", "templ_values", "anser")
DUPLICATE_RULES = ("error", "drop")

_PLACEHOLDER = re.compile(r"<([^<>\s]*)>")
_QUESTION_MARKS = ("?", "？")
_SPLIT_WORDS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_REAL_VIDEO = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Question:
    """One question of MUSIC-AVQA.

    type: "Modality/Kind", one of `question_types.TYPES`; text: the filled-in question (docs/schema.md,
    "Questions: text, ids, duplicates"); template: `question_content` as released; question_id < 0 marks a
    synthetic id (row without one); audio_video_id: the video whose audio goes with the question, `video_id`
    unless the row has v2.0's `unmatch_audio` (left empty, it is set to `video_id`).
    """

    question_id: int
    video_id: str
    split: str
    text: str
    type: str
    answer: str
    template: str
    templ_values: tuple[str, ...]
    audio_video_id: str = ""

    def __post_init__(self) -> None:
        if not self.audio_video_id:
            object.__setattr__(self, "audio_video_id", self.video_id)


def is_real_video(video_id: str) -> bool:
    """MUSIC-AVQA-Real membership: the video id is all digits (synthetic ones start with va, vv, sa, eva, ...)."""
    return _REAL_VIDEO.fullmatch(video_id) is not None


def select_subset(questions: Iterable[Question], subset: str | None) -> list[Question]:
    """The questions of a subset: None or "all" keeps everything, "real" keeps MUSIC-AVQA-Real."""
    if subset is None or subset == "all":
        return list(questions)
    if subset == "real":
        return [q for q in questions if is_real_video(q.video_id)]
    raise ValueError(f"unknown subset {subset!r}: expected None or one of {list(SUBSETS)}")


def split_from_name(path: str | Path) -> str:
    """The split a file name names: avqa-test.json, test_balance.json -> "test"; balance_valid.json -> "val"."""
    words = re.split(r"[^a-z0-9]+", Path(path).stem.lower())
    found = sorted({_SPLIT_WORDS[w] for w in words if w in _SPLIT_WORDS})
    if len(found) != 1:
        named = f"names {found}" if found else "names no split"
        raise AnnotationError(
            f"{path}: the file name {named}; pass the split explicitly (split= one of {list(SPLITS)})"
        )
    return found[0]


def fill_template(template: str, values: Iterable[str], where: str = "") -> str:
    """The question text: placeholders filled in order, final "?"/"？" dropped, single spaces."""
    prefix = f"{where}: " if where else ""
    values = list(values)
    text = template.strip()
    if text.endswith(_QUESTION_MARKS):
        text = text[:-1]
    names = _PLACEHOLDER.findall(text)
    for name in names:
        if name not in PLACEHOLDERS:
            raise AnnotationError(f"{prefix}unknown placeholder <{name}> in {template!r}")
    if len(names) > len(values):
        raise AnnotationError(
            f"{prefix}placeholder <{names[len(values)]}> (number {len(values) + 1}) has no value: "
            f"{template!r} with templ_values {values}"
        )
    if len(names) < len(values):
        raise AnnotationError(
            f"{prefix}{len(values)} templ_values {values} for {len(names)} placeholders in {template!r}"
        )
    fillers = iter(values)
    text = _PLACEHOLDER.sub(lambda _: next(fillers), text)
    return " ".join(text.split())


def synthetic_question_id(video_id: str, text: str, unmatch_audio: str | None = None) -> int:
    """The negative id given to a row without question_id: docs/schema.md, "Questions: text, ids,
    duplicates"."""
    key = "\x1f".join((video_id, unmatch_audio or "", text)).encode("utf-8")
    return -1 - int.from_bytes(hashlib.sha256(key).digest()[:6], "big")


def _parse_question_id(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise AnnotationError(f"{where}: question_id must be an integer, got {value!r}")


def _parse_str_list(value: object, key: str, where: str) -> list[str]:
    """`type` and `templ_values`: a string holding a JSON list of strings (v2.0 sometimes stores the list)."""
    parsed = value
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
    if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
        raise AnnotationError(f"{where}: {key} must hold a JSON list of strings, got {value!r}")
    return parsed


def _parse_type(value: object, where: str) -> str:
    parts = _parse_str_list(value, "type", where)
    if len(parts) != 2:
        raise AnnotationError(f"{where}: type must be [modality, kind], got {value!r}")
    name = type_name(*parts)
    return TYPES[type_index(name, where)]


def _parse_row(row: object, index: int, path: Path, split: str) -> Question:
    where = f"{path}: row {index}"
    if not isinstance(row, dict):
        raise AnnotationError(f"{where}: expected an object, got {row!r}")
    question_id = _parse_question_id(row.get("question_id"), where)
    if question_id is not None:
        where += f" (question_id {question_id})"
    for key in REQUIRED_KEYS:
        if key not in row:
            raise AnnotationError(f"{where}: missing key {key!r} (the row has {sorted(row)})")
    for key in ("video_id", "question_content", "anser"):
        if not isinstance(row[key], str) or not row[key].strip():
            raise AnnotationError(f"{where}: {key} must be a non-empty string, got {row[key]!r}")
    type_ = _parse_type(row["type"], where)
    answer = row["anser"]
    answer_index(answer, where)
    values = tuple(_parse_str_list(row["templ_values"], "templ_values", where))
    text = fill_template(row["question_content"], values, where)
    unmatch = row.get("unmatch_audio")
    if unmatch is not None and (not isinstance(unmatch, str) or not unmatch.strip()):
        raise AnnotationError(f"{where}: unmatch_audio must be a video id or null, got {unmatch!r}")
    if question_id is None:
        question_id = synthetic_question_id(row["video_id"], text, unmatch)
    return Question(
        question_id=question_id,
        video_id=row["video_id"],
        split=split,
        text=text,
        type=type_,
        answer=answer,
        template=row["question_content"],
        templ_values=values,
        audio_video_id=unmatch or "",
    )


def _difference(a: Question, b: Question) -> str:
    return ", ".join(
        f"{f.name} {getattr(a, f.name)!r} vs {getattr(b, f.name)!r}"
        for f in fields(Question)
        if getattr(a, f.name) != getattr(b, f.name)
    )


def _resolve_duplicates(questions: list[Question], path: Path, duplicates: str) -> list[Question]:
    """Collapse identical rows sharing a question_id; error on (or drop) rows that share one but differ."""
    first_row: dict[int, int] = {}  # question_id -> row index of its first occurrence
    kept: list[Question] = []
    collapsed: list[int] = []
    conflicting: set[int] = set()
    for row, question in enumerate(questions):
        qid = question.question_id
        if qid not in first_row:
            first_row[qid] = row
            kept.append(question)
        elif questions[first_row[qid]] == question:
            collapsed.append(row)
        elif duplicates == "drop":
            conflicting.add(qid)
        else:
            raise AnnotationError(
                f"{path}: rows {first_row[qid]} and {row} share question_id {qid} but differ "
                f"({_difference(questions[first_row[qid]], question)}); use the corrected json_update "
                f"release, or duplicates='drop' to drop both"
            )
    if collapsed:
        logger.info(
            "%s: %d rows repeat an earlier row exactly and were collapsed (rows %s)",
            path,
            len(collapsed),
            collapsed[:10],
        )
    if conflicting:
        dropped = sum(1 for q in questions if q.question_id in conflicting)
        logger.warning(
            "%s: dropped %d rows of %d question_ids whose rows disagree (e.g. %s)",
            path,
            dropped,
            len(conflicting),
            sorted(conflicting)[:10],
        )
        kept = [q for q in kept if q.question_id not in conflicting]
    return kept


def _read_rows(path: Path) -> list:
    if path.is_dir():
        raise AnnotationError(f"{path}: is a folder; use load_annotation_dir")
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(rows, list):
        raise AnnotationError(f"{path}: expected a JSON list of questions, got a JSON {type(rows).__name__}")
    return rows


def load_annotations(path: str | Path, split: str | None = None, duplicates: str = "error") -> list[Question]:
    """All questions of one annotation file, in file order.

    split: "train", "val" or "test"; taken from the file name when None (an unclear name is an error).
    duplicates: what to do with rows that share a question_id but differ: "error" (default) or "drop".
    """
    path = Path(path)
    if split is None:
        split = split_from_name(path)
    elif split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {path}: expected one of {list(SPLITS)}")
    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"unknown duplicates rule {duplicates!r}: expected one of {list(DUPLICATE_RULES)}")
    rows = _read_rows(path)
    questions = [_parse_row(row, i, path, split) for i, row in enumerate(rows)]
    synthetic = sum(1 for row in rows if row.get("question_id") is None)
    if synthetic:
        logger.info("%s: %d rows without question_id got synthetic (negative) ids", path, synthetic)
    unmatched = sum(1 for row in rows if row.get("unmatch_audio") is not None)
    if unmatched:
        logger.info(
            "%s: %d rows pair the video with another video's audio ('unmatch_audio', MUSIC-AVQA-v2.0): "
            "kept as audio_video_id",
            path,
            unmatched,
        )
    return _resolve_duplicates(questions, path, duplicates)


def load_annotation_dir(folder: str | Path, duplicates: str = "error") -> dict[str, list[Question]]:
    """Every annotation file directly in `folder`, by file name (split from each name).

    Files are kept apart, not merged: a folder may hold overlapping views of one split (the original
    release has avqa-test.json next to avqa-test_real.json). JSON files whose name names no split
    (answer2idx.json, music_avqa.json) are skipped and logged.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"annotation folder not found: {folder}")
    loaded = {}
    for path in sorted(folder.glob("*.json")):
        try:
            split = split_from_name(path)
        except AnnotationError:
            logger.info("%s: skipped, the file name names no split", path)
            continue
        loaded[path.name] = load_annotations(path, split, duplicates)
    if not loaded:
        raise AnnotationError(f"{folder}: no annotation file (*.json naming train, val or test)")
    return loaded


def load_questions(paths: Iterable[str | Path], split: str | None = None) -> list[Question]:
    """Every question of the given files or folders; one id in two files must be the same question.

    A folder's files take their split from their names; `split` applies to files only.
    """
    by_id: dict[int, tuple[Question, str]] = {}
    for given in paths:
        if Path(given).is_dir():
            if split is not None:
                raise AnnotationError(
                    f"{given}: --split applies to files; a folder's files take their split from their names"
                )
            per_file = load_annotation_dir(given)
        else:
            per_file = {str(given): load_annotations(given, split)}
        for f, questions in per_file.items():
            for q in questions:
                seen = by_id.get(q.question_id)
                if seen is not None and seen[0] != q:
                    raise AnnotationError(
                        f"{f}: question_id {q.question_id} is also in {seen[1]} with different content"
                    )
                by_id[q.question_id] = (q, str(f))
    return [q for q, _ in by_id.values()]
