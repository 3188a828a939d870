"""The 9 MUSIC-AVQA question types and the paper's results row (AVAF-Net, Tables 1-2).

Types are spelled "Modality/Kind" (e.g. "Audio-Visual/Counting") and listed in `manifests/question_types.json`
in the paper's column order: Audio {Counting, Comparative}, Visual {Counting, Location}, Audio-Visual
{Existential, Counting, Location, Comparative, Temporal}. `type_table` turns per-question correctness into the
row every evaluation prints (DESIGN.md §4): the 9 type accuracies, the Audio / Visual / Audio-Visual averages and
the overall accuracy, each a mean over questions (eq. 15: correct / total), in percent like the paper.

    >>> from avaf.shared.avqa.question_types import markdown_table, type_table
    >>> row = type_table(["Audio/Counting", "Visual/Location"], [True, False])
    >>> row["Audio"], row["All"]
    (100.0, 50.0)
    >>> print(markdown_table({"ours": row}))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

from avaf.shared.avqa.manifests import manifest_path
from avaf.shared.errors import AnnotationError

MANIFEST = "question_types.json"
OVERALL = "All"  # key of the overall accuracy in a type_table row (Table 3's header; Tables 1-2 say "Avg")


def _load_manifest() -> dict:
    return json.loads(manifest_path(MANIFEST).read_text(encoding="utf-8"))


_MANIFEST = _load_manifest()
TYPES: tuple[str, ...] = tuple(t["name"] for t in _MANIFEST["types"])
MODALITIES: tuple[str, ...] = tuple(_MANIFEST["modalities"])
MODALITY_TYPES: dict[str, tuple[str, ...]] = {
    m: tuple(t["name"] for t in _MANIFEST["types"] if t["modality"] == m) for m in MODALITIES
}
#: The paper's column header of each type under its modality: "Count", "Comp", "Local", "Exist", "Temp".
TYPE_COLUMNS: dict[str, str] = {t["name"]: t["column"] for t in _MANIFEST["types"]}
_MODALITY_OF = {t["name"]: t["modality"] for t in _MANIFEST["types"]}
_INDEX = {name: i for i, name in enumerate(TYPES)}


def type_name(modality: str, kind: str) -> str:
    """avaf's spelling of a type from the annotation's `type` list: ("Audio", "Counting") -> "Audio/Counting"."""
    return f"{modality}/{kind}"


def type_index(type_: str, where: str = "") -> int:
    """Position of `type_` in TYPES (0..8); an unknown type is an AnnotationError naming `where`."""
    index = _INDEX.get(type_)
    if index is None:
        prefix = f"{where}: " if where else ""
        raise AnnotationError(f"{prefix}unknown question type {type_!r}: not one of {list(TYPES)}")
    return index


def modality_of(type_: str) -> str:
    """ "Audio", "Visual" or "Audio-Visual" for one of the 9 types."""
    return _MODALITY_OF[TYPES[type_index(type_)]]


def table_columns() -> list[tuple[str, str]]:
    """(row key, header) pairs in the paper's order: 'Audio Count', 'Audio Comp', 'Audio Avg', ..., 'All'."""
    columns = []
    for modality in MODALITIES:
        columns += [(t, f"{modality} {TYPE_COLUMNS[t]}") for t in MODALITY_TYPES[modality]]
        columns.append((modality, f"{modality} {_MANIFEST['average_column']}"))
    columns.append((OVERALL, _MANIFEST["overall_column"]))
    return columns


def _percent(hits: int, total: int) -> float:
    return 100.0 * hits / total if total else math.nan


def type_table(types: Sequence[str], correct: Sequence[bool]) -> dict[str, float]:
    """The paper's results row from one type and one correct/wrong flag per question.

    Keys: the 9 TYPES, the 3 MODALITIES and OVERALL ("All"); values are accuracies in percent, NaN where no
    question falls in the group. A modality's average is over its questions (not the mean of its type
    accuracies), and "All" is over all questions, as in the paper.
    """
    if len(types) != len(correct):
        raise ValueError(f"type_table: {len(types)} types but {len(correct)} correctness flags")
    hits = dict.fromkeys(TYPES, 0)
    totals = dict.fromkeys(TYPES, 0)
    for i, (type_, ok) in enumerate(zip(types, correct)):
        name = TYPES[type_index(type_, where=f"question {i}")]
        totals[name] += 1
        hits[name] += bool(ok)
    row = {t: _percent(hits[t], totals[t]) for t in TYPES}
    for modality, members in MODALITY_TYPES.items():
        row[modality] = _percent(sum(hits[t] for t in members), sum(totals[t] for t in members))
    row[OVERALL] = _percent(sum(hits.values()), sum(totals.values()))
    return row


def markdown_table(rows: Mapping[str, Mapping[str, float]], digits: int = 2) -> str:
    """A Markdown table with the paper's columns, one line per named `type_table` row ("–" for NaN)."""
    columns = table_columns()
    lines = [
        "| Method | " + " | ".join(header for _, header in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, row in rows.items():
        cells = [row.get(key, math.nan) for key, _ in columns]
        text = ["–" if math.isnan(value) else f"{value:.{digits}f}" for value in cells]
        lines.append(f"| {name} | " + " | ".join(text) + " |")
    return "\n".join(lines) + "\n"
