"""The 9 question types, the paper's results row (hand-computed) and its Markdown rendering."""

from __future__ import annotations

import math

import pytest

from avaf.shared.avqa.annotations import AnnotationError, load_annotations
from avaf.shared.avqa.question_types import (
    MODALITIES,
    MODALITY_TYPES,
    OVERALL,
    TYPE_COLUMNS,
    TYPES,
    markdown_table,
    modality_of,
    table_columns,
    type_index,
    type_table,
)

from conftest import DATA

AUDIO = ("Audio/Counting", "Audio/Comparative")
VISUAL = ("Visual/Counting", "Visual/Location")
AV = (
    "Audio-Visual/Existential",
    "Audio-Visual/Counting",
    "Audio-Visual/Location",
    "Audio-Visual/Comparative",
    "Audio-Visual/Temporal",
)


def test_types_in_paper_order():
    assert TYPES == AUDIO + VISUAL + AV
    assert MODALITIES == ("Audio", "Visual", "Audio-Visual")
    assert MODALITY_TYPES == {"Audio": AUDIO, "Visual": VISUAL, "Audio-Visual": AV}
    assert [TYPE_COLUMNS[t] for t in TYPES] == [
        "Count", "Comp", "Count", "Local", "Exist", "Count", "Local", "Comp", "Temp",
    ]  # fmt: skip
    assert (type_index("Audio/Counting"), type_index("Audio-Visual/Temporal")) == (0, 8)
    assert modality_of("Visual/Location") == "Visual"


def test_table_columns_are_the_papers():
    assert [header for _, header in table_columns()] == [
        "Audio Count", "Audio Comp", "Audio Avg",
        "Visual Count", "Visual Local", "Visual Avg",
        "Audio-Visual Exist", "Audio-Visual Count", "Audio-Visual Local", "Audio-Visual Comp",
        "Audio-Visual Temp", "Audio-Visual Avg",
        "All",
    ]  # fmt: skip


# A hand-made evaluation: (type, number right, number asked).
HAND = [
    ("Audio/Counting", 3, 3),
    ("Audio/Comparative", 0, 1),
    ("Visual/Counting", 1, 2),
    ("Audio-Visual/Existential", 1, 4),
    ("Audio-Visual/Temporal", 1, 1),
]


def _flags(spec):
    types, correct = [], []
    for type_, right, asked in spec:
        types += [type_] * asked
        correct += [True] * right + [False] * (asked - right)
    return types, correct


def test_type_table_hand_computed():
    types, correct = _flags(HAND)
    row = type_table(types, correct)
    assert row["Audio/Counting"] == 100.0
    assert row["Audio/Comparative"] == 0.0
    assert row["Visual/Counting"] == 50.0
    assert row["Audio-Visual/Existential"] == 25.0
    assert row["Audio-Visual/Temporal"] == 100.0
    assert [t for t in TYPES if math.isnan(row[t])] == [
        "Visual/Location", "Audio-Visual/Counting", "Audio-Visual/Location", "Audio-Visual/Comparative",
    ]  # fmt: skip
    # Averages over questions, not over types: Audio 3/4 (types would give 50), AV 2/5 (types: 62.5).
    assert row["Audio"] == 75.0
    assert row["Visual"] == 50.0
    assert row["Audio-Visual"] == 40.0
    assert row[OVERALL] == pytest.approx(100 * 6 / 11)
    assert set(row) == set(TYPES) | set(MODALITIES) | {OVERALL}


def test_type_table_order_of_questions_does_not_matter():
    types, correct = _flags(HAND)
    assert type_table(types[::-1], correct[::-1]) == pytest.approx(type_table(types, correct), nan_ok=True)


def test_type_table_on_real_test_types():
    questions = load_annotations(DATA / "music-avqa" / "json_update" / "avqa-test.json")
    types = [q.type for q in questions]
    row = type_table(types, [t == "Audio/Counting" for t in types])  # only Audio Counting right
    assert row["Audio/Counting"] == 100.0 and row["Audio/Comparative"] == 0.0
    assert row["Audio"] == pytest.approx(100 * 1017 / (1017 + 594))
    assert row["Visual"] == 0.0 and row["Audio-Visual"] == 0.0
    assert row[OVERALL] == pytest.approx(100 * 1017 / 9129)


def test_type_table_errors():
    with pytest.raises(ValueError, match="2 types but 1 correctness flags"):
        type_table(["Audio/Counting", "Audio/Counting"], [True])
    with pytest.raises(AnnotationError, match=r"question 1: unknown question type 'Audio/Location'"):
        type_table(["Audio/Counting", "Audio/Location"], [True, False])


def test_markdown_table():
    types, correct = _flags(HAND)
    text = markdown_table({"hand": type_table(types, correct), "empty": {}}, digits=1)
    assert text == (
        "| Method | Audio Count | Audio Comp | Audio Avg | Visual Count | Visual Local | Visual Avg"
        " | Audio-Visual Exist | Audio-Visual Count | Audio-Visual Local | Audio-Visual Comp"
        " | Audio-Visual Temp | Audio-Visual Avg | All |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        "| hand | 100.0 | 0.0 | 75.0 | 50.0 | – | 50.0 | 25.0 | – | – | – | 100.0 | 40.0 | 54.5 |\n"
        "| empty | – | – | – | – | – | – | – | – | – | – | – | – | – |\n"
    )
