"""Annotation parsing on the real MUSIC-AVQA files (tests/data/music-avqa, see its SOURCE.md) and on broken ones."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest

from avaf.shared.avqa.annotations import (
    AnnotationError,
    Question,
    fill_template,
    is_real_video,
    load_annotation_dir,
    load_annotations,
    select_subset,
    split_from_name,
    synthetic_question_id,
)
from avaf.shared.avqa.answers import ANSWERS, answer_index
from avaf.shared.avqa.manifests import manifest_path
from avaf.shared.avqa.question_types import TYPES

from conftest import DATA

MAVQA = DATA / "music-avqa"
TEST = MAVQA / "json_update" / "avqa-test.json"
VAL = MAVQA / "json_update" / "avqa-val.json"
ORIGINAL_VAL = MAVQA / "json" / "avqa-val.json"
V2_TEST = MAVQA / "v2.0" / "balance_full_set" / "test_balance.json"
V2_VAL = MAVQA / "v2.0" / "qa-tiger_split" / "balance_valid.json"


@pytest.fixture(scope="module")
def test_questions() -> list[Question]:
    return load_annotations(TEST)


@pytest.fixture(scope="module")
def val_questions() -> list[Question]:
    return load_annotations(VAL)


def _by_id(questions: list[Question]) -> dict[int, Question]:
    return {q.question_id: q for q in questions}


# --- json_update: counts, types, subsets, texts -----------------------------------------------------------


def test_json_update_counts(test_questions, val_questions):
    assert len(test_questions) == 9129
    assert len(val_questions) == 4568
    assert {q.split for q in test_questions} == {"test"}
    assert {q.split for q in val_questions} == {"val"}
    assert len(_by_id(test_questions)) == 9129  # ids unique
    assert [q.question_id for q in test_questions[:3]] == [12, 13, 28]  # file order kept


def test_type_counts_on_test(test_questions):
    counts = Counter(q.type for q in test_questions)
    assert [counts[t] for t in TYPES] == [1017, 594, 1197, 1225, 988, 1265, 920, 1101, 822]


def test_type_counts_on_val(val_questions):
    counts = Counter(q.type for q in val_questions)
    assert [counts[t] for t in TYPES] == [511, 295, 600, 613, 495, 633, 461, 549, 411]


def test_real_subset(test_questions, val_questions):
    real = select_subset(test_questions, "real")
    assert len(real) == 7365  # = AVAF-Net's avqa_data/music_avqa_real/real_avqa-test.json
    assert len(select_subset(val_questions, "real")) == 3681  # = its real_avqa-val.json
    synthetic = {q.video_id[:3].rstrip("0123456789") for q in test_questions if not is_real_video(q.video_id)}
    assert synthetic == {"va", "vv", "sa", "eva", "evv", "esa"}
    assert len(select_subset(test_questions, None)) == len(select_subset(test_questions, "all")) == 9129
    with pytest.raises(ValueError, match="'fake'"):
        select_subset(test_questions, "fake")


@pytest.mark.parametrize(
    "video_id, real",
    [("00000093", True), ("va00001181", False), ("eva00001181", False), ("tOcOiTFQYp4", False), ("", False)],
)
def test_is_real_video(video_id, real):
    assert is_real_video(video_id) is real


# Expected texts written by hand from the rows (json_update/avqa-test.json).
HAND_TEXTS = {
    12: "How many musical instruments were heard throughout the video",
    35: "How many sounding violin in the video",  # full-width ？
    95: "Is the instrument on the right more rhythmic than the instrument on the left",
    224: "Where is the loudest instrument",
    1464: "What is the third instrument that comes in",
    3952: "Is the banjo on the left more rhythmic than the acoustic_guitar on the right",
    4164: "Are there cello and accordion sound",  # template ends in "? "
    4317: "Which instrument makes sounds before the violin",
    4829: "What kind of instrument is the rightest instrument",  # <LRer>, template ends in "? "
    49431: "Is the instrument on the right louder than the instrument on the left",
}


def test_filled_texts_by_hand(test_questions):
    by_id = _by_id(test_questions)
    assert {qid: by_id[qid].text for qid in HAND_TEXTS} == HAND_TEXTS
    q = by_id[4317]
    assert (q.video_id, q.type, q.answer) == ("00007634", "Audio-Visual/Temporal", "cello")
    assert q.template == "Which instrument makes sounds <BA> the <Object>?"
    assert q.templ_values == ("before", "violin")
    assert by_id[4829].template.endswith("instrument? ")  # template kept as released


def _public_preprocessing(row: dict) -> str:
    """The public AVQA repos' recipe, restated: split on spaces, cut the last word's final character
    (the question mark), swap each word holding '<' for the next filler, join with spaces."""
    words = row["question_content"].rstrip().split(" ")
    words[-1] = words[-1][:-1]
    values = row["templ_values"]
    fillers = iter(json.loads(values) if isinstance(values, str) else values)
    return " ".join(next(fillers) if "<" in word else word for word in words)


@pytest.mark.parametrize("path", [TEST, VAL, V2_TEST, V2_VAL], ids=lambda p: p.name)
def test_text_equals_public_preprocessing_on_every_row(path):
    rows = json.loads(path.read_text(encoding="utf-8"))
    texts = [q.text for q in load_annotations(path)]
    assert texts == [_public_preprocessing(r) for r in rows]  # no row collapses in these files


# --- answers ---------------------------------------------------------------------------------------------


def test_answer_manifest_is_qa_tiger_order():
    ans2ix = json.loads((MAVQA / "qa-tiger" / "answer2idx.json").read_text())["ans2ix"]
    assert list(ANSWERS) == sorted(ans2ix, key=ans2ix.get)
    assert len(ANSWERS) == 42 and len(set(ANSWERS)) == 42
    assert ANSWERS[:5] == ("two", "cello", "congas", "zero", "no")
    assert (answer_index("two"), answer_index("yes"), answer_index("suona")) == (0, 7, 41)
    assert json.loads(manifest_path("answers.json").read_text())["answers"] == list(ANSWERS)


@pytest.mark.parametrize("path", [TEST, VAL, V2_TEST, V2_VAL], ids=lambda p: p.name)
def test_every_real_answer_is_in_the_vocabulary(path):
    answers = {r["anser"] for r in json.loads(path.read_text(encoding="utf-8"))}
    assert answers <= set(ANSWERS)
    assert len(answers) == (42 if "v2.0" in str(path) else 41)  # json_update test/val never answer "ten"


def test_unknown_answer_index_names_where():
    with pytest.raises(AnnotationError, match=r"f\.json: row 3: unknown answer 'maybe'"):
        answer_index("maybe", "f.json: row 3")


# --- duplicates ------------------------------------------------------------------------------------------


def test_original_val_conflicting_duplicates_are_an_error():
    # Every one of the 27 repeated question_ids in the original release has two different answers.
    with pytest.raises(AnnotationError) as err:
        load_annotations(ORIGINAL_VAL)
    message = str(err.value)
    assert "json/avqa-val.json" in message
    assert "rows 26 and 27 share question_id 291" in message
    assert "answer 'yes' vs 'no'" in message


def test_original_val_drop_rule(val_questions, caplog):
    with caplog.at_level(logging.WARNING, logger="avaf.shared.avqa.annotations"):
        questions = load_annotations(ORIGINAL_VAL, duplicates="drop")
    assert len(questions) == 4595 - 2 * 27 == 4541
    assert "dropped 54 rows of 27 question_ids" in caplog.text
    rows = json.loads(ORIGINAL_VAL.read_text())
    repeated = {qid for qid, n in Counter(r["question_id"] for r in rows).items() if n == 2}
    assert len(repeated) == 27
    assert set(_by_id(questions)) == set(_by_id(val_questions)) - repeated


def test_identical_duplicates_collapse(tmp_path, caplog):
    rows = json.loads(VAL.read_text())
    path = tmp_path / "avqa-val.json"
    path.write_text(json.dumps(rows + [rows[0], rows[100], dict(rows[4000], person=None)]))
    with caplog.at_level(logging.INFO, logger="avaf.shared.avqa.annotations"):
        questions = load_annotations(path)
    assert [q.question_id for q in questions] == [r["question_id"] for r in rows]
    assert "3 rows repeat an earlier row exactly and were collapsed (rows [4568, 4569, 4570])" in caplog.text


def test_conflicting_duplicate_names_both_rows(tmp_path):
    rows = json.loads(VAL.read_text())[:5]
    rows.append(dict(rows[2], anser="seven"))
    path = tmp_path / "avqa-val.json"
    path.write_text(json.dumps(rows))
    with pytest.raises(
        AnnotationError, match=rf"rows 2 and 5 share question_id {rows[2]['question_id']}"
    ) as e:
        load_annotations(path)
    assert str(path) in str(e.value) and f"answer '{rows[2]['anser']}' vs 'seven'" in str(e.value)


# --- MUSIC-AVQA-v2.0 -------------------------------------------------------------------------------------


def test_v2_missing_question_ids(tmp_path):
    rows = json.loads(V2_TEST.read_text(encoding="utf-8"))
    questions = load_annotations(V2_TEST)
    assert len(questions) == 10819 and questions[0].split == "test"
    real_ids = [r["question_id"] for r in rows if "question_id" in r]
    assert len(real_ids) == 9095
    assert [q.question_id for q in questions if q.question_id >= 0] == real_ids
    synthetic = [q for q in questions if q.question_id < 0]
    assert len(synthetic) == 1724 and len(_by_id(questions)) == 10819
    # row 1 has no question_id: its id is the documented hash, independent of its row.
    row1 = questions[1]
    assert (row1.video_id, row1.text) == ("tOcOiTFQYp4", "How many sounding erhu in the video")
    assert row1.question_id == synthetic_question_id("tOcOiTFQYp4", row1.text)
    assert -(2**48) <= row1.question_id < 0
    reversed_file = tmp_path / V2_TEST.name
    reversed_file.write_text(json.dumps(rows[::-1]))
    reordered = [q.question_id for q in load_annotations(reversed_file)]
    assert reordered == [q.question_id for q in questions][::-1]


def test_v2_extra_keys_and_list_templ_values_are_read():
    questions = load_annotations(V2_TEST)
    # row 104 pairs video sa00006547 with the audio of 00008531; its list templ_values is [].
    q = questions[104]
    assert (q.video_id, q.answer, q.templ_values) == ("sa00006547", "no", ())
    assert q.text == "Is this sound from the instrument in the video"
    same_question = [p for p in questions if p.video_id == "sa00006547" and p.text == q.text]
    # The v1 row (id 32429) and the v2.0 row with another video's audio: unmatch_audio tells them apart.
    assert sorted(p.question_id for p in same_question)[1] == 32429 and len(same_question) == 2


def test_v2_float_question_ids():
    rows = json.loads(V2_VAL.read_text(encoding="utf-8"))
    assert rows[0]["question_id"] == 47859.0 and isinstance(rows[0]["question_id"], float)
    questions = load_annotations(V2_VAL)
    assert len(questions) == 5346 and questions[0].split == "val"
    assert questions[0].question_id == 47859 and type(questions[0].question_id) is int
    assert all(type(q.question_id) is int for q in questions)
    assert sum(q.question_id < 0 for q in questions) == 826  # rows with "question_id": null


# --- splits, folders -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, split",
    [
        ("avqa-test.json", "test"),
        ("avqa-val_real.json", "val"),
        ("avqa-train_fake.json", "train"),
        ("real_avqa-test.json", "test"),
        ("test_balance.json", "test"),
        ("balance_valid.json", "val"),
        ("balance_train.json", "train"),
        ("music_avqa_test_multiple_q.json", "test"),
    ],
)
def test_split_from_name(name, split):
    assert split_from_name(name) == split


@pytest.mark.parametrize("name", ["music_avqa.json", "answer2idx.json", "train_and_test.json"])
def test_split_from_unclear_name_asks_for_it(name):
    with pytest.raises(AnnotationError, match=rf"{name}: .*pass the split explicitly"):
        split_from_name(name)


def test_explicit_split(tmp_path):
    path = tmp_path / "questions.json"
    path.write_text(VAL.read_text())
    assert {q.split for q in load_annotations(path, split="train")} == {"train"}
    with pytest.raises(AnnotationError, match="names no split"):
        load_annotations(path)
    with pytest.raises(ValueError, match="'dev'"):
        load_annotations(path, split="dev")


def test_load_annotation_dir(tmp_path):
    loaded = load_annotation_dir(MAVQA / "json_update")
    assert {name: len(qs) for name, qs in loaded.items()} == {"avqa-test.json": 9129, "avqa-val.json": 4568}
    (tmp_path / "answer2idx.json").write_text("{}")  # not an annotation file: skipped
    with pytest.raises(AnnotationError, match="no annotation file"):
        load_annotation_dir(tmp_path)


# --- malformed files -------------------------------------------------------------------------------------

GOOD_ROW = {
    "video_id": "00000093",
    "question_id": 77,
    "type": '["Audio-Visual", "Counting"]',
    "question_content": "How many sounding <Object> in the video？",
    "templ_values": '["erhu"]',
    "question_deleted": 0,
    "anser": "two",
}


def _write(tmp_path: Path, rows: object, text: str | None = None) -> Path:
    path = tmp_path / "avqa-test.json"
    path.write_text(json.dumps(rows) if text is None else text, encoding="utf-8")
    return path


def test_good_row_parses(tmp_path):
    [q] = load_annotations(_write(tmp_path, [GOOD_ROW]))
    assert q == Question(77, "00000093", "test", "How many sounding erhu in the video", "Audio-Visual/Counting",
                         "two", "How many sounding <Object> in the video？", ("erhu",))  # fmt: skip


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"anser": "maybe"}, "row 1 (question_id 77): unknown answer 'maybe'"),
        (
            {"type": '["Audio", "Existential"]'},
            "row 1 (question_id 77): unknown question type 'Audio/Existential'",
        ),
        ({"type": '["Audio"]'}, "row 1 (question_id 77): type must be [modality, kind], got '[\"Audio\"]'"),
        ({"templ_values": "[]"}, "row 1 (question_id 77): placeholder <Object> (number 1) has no value"),
        ({"templ_values": '["erhu", "pipa"]'}, "row 1 (question_id 77): 2 templ_values ['erhu', 'pipa']"),
        ({"templ_values": "[erhu]"}, "row 1 (question_id 77): templ_values must hold a JSON list of strings"),
        ({"question_content": "Is <Thing> on?"}, "row 1 (question_id 77): unknown placeholder <Thing>"),
        ({"question_id": 77.5}, "row 1: question_id must be an integer, got 77.5"),
        ({"video_id": 93}, "row 1 (question_id 77): video_id must be a non-empty string, got 93"),
    ],
)
def test_bad_row_names_file_row_and_value(tmp_path, change, expected):
    path = _write(tmp_path, [GOOD_ROW, dict(GOOD_ROW, **change)])
    with pytest.raises(AnnotationError) as err:
        load_annotations(path)
    assert str(err.value).startswith(f"{path}: ")
    assert expected in str(err.value)


def test_missing_key(tmp_path):
    row = {k: v for k, v in GOOD_ROW.items() if k != "anser"}
    path = _write(tmp_path, [GOOD_ROW, GOOD_ROW, row])
    with pytest.raises(
        AnnotationError, match=r"avqa-test\.json: row 2 \(question_id 77\): missing key 'anser'"
    ):
        load_annotations(path)


def test_row_without_id_is_named_by_index(tmp_path):
    row = {k: v for k, v in GOOD_ROW.items() if k != "question_id"}
    path = _write(tmp_path, [dict(row, anser="maybe")])
    with pytest.raises(AnnotationError, match=r"avqa-test\.json: row 0: unknown answer 'maybe'"):
        load_annotations(path)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            '[{"video_id": "1",',
            "not JSON: Expecting property name enclosed in double quotes at line 1 column 19",
        ),
        ('{"questions": []}', "expected a JSON list of questions, got a JSON dict"),
        ("[1]", "row 0: expected an object, got 1"),
    ],
)
def test_bad_file(tmp_path, text, expected):
    path = _write(tmp_path, None, text)
    with pytest.raises(AnnotationError, match="^" + re.escape(f"{path}: {expected}")):
        load_annotations(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="avqa-test.json"):
        load_annotations(tmp_path / "avqa-test.json")
    with pytest.raises(AnnotationError, match="is a folder; use load_annotation_dir"):
        load_annotations(MAVQA / "json_update", split="test")


def test_fill_template_whitespace():
    assert fill_template("  Is the <Object>  louder than the <Object>? ", ["drum", "erhu"]) == (
        "Is the drum louder than the erhu"
    )
    assert fill_template("Where is the performance", []) == "Where is the performance"  # no "?" to drop
