"""QA-prompt tables (extract/prompts.py): .xlsx and .csv in TSPM's column layout, matching, filling, errors.

Every table here is written by the test itself, with made-up sentences (TSPM's table has no license and is
not in this repository); the .xlsx is a minimal SpreadsheetML zip built with zipfile.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from avaf.extract.prompts import fill_prompt, load_prompt_table, template_key
from avaf.shared.avqa.annotations import Question, load_annotations
from avaf.shared.errors import AnnotationError

from conftest import DATA

HEADER = ("No.", "Modalities", "Type", "Question Template", "Declarative Sentence Text Prompt")
T_SOUND = "Is there a <Object> sound?"
T_LOUDER = "Is the <Object> on the <LR> louder than the <Object> on the <LR>?"
T_RHYTHM = "Is the <Object> on the <LR> more rhythmic than the <Object> on the <LR>?"
T_LR_FL = "What is the <LR> instrument of the <FL> sounding instrument?"
T_BA = "Which instrument makes sounds <BA> the <Object>?"
T_PLACE = "Where is the performance?"
T_COUNT = "How many sounding <Object> in the video?"
ROWS = [
    HEADER,
    (1, "Audio", " Counting", T_SOUND, "Somebody plays a <Object> here."),
    (2, "Audio-Visual", " Comparative", T_LOUDER, "The <Object2> at <LR2> faces the <Object1> at <LR1>."),
    (3, "Audio-Visual", " Comparative", T_RHYTHM, "First the <Object> at <LR>, then the <Object> at <LR>."),
    (4, "Audio-Visual", " Location", T_LR_FL, "Look to the <LR> side."),
    (5, "Audio-Visual", " Temporal", T_BA, "Listen for the <Object>."),
    (6, "Visual", " Location", T_PLACE, "A  stage   somewhere."),
    (7, "Audio-Visual", " Counting", T_COUNT, "Count every <Object>."),
]
MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG = "http://schemas.openxmlformats.org/package/2006/relationships"


def question(template: str, values: tuple[str, ...] = (), qid: int = 1) -> Question:
    return Question(qid, "00000001", "test", "-", "Audio/Counting", "yes", template, values)


def write_csv(path: Path, rows: list[tuple], delimiter: str = ",", bom: bool = False) -> Path:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerows(rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buf.getvalue().encode("utf-8"))
    return path


def sheet_xml(rows: list[tuple], strings: list[str]) -> str:
    """Text cells as shared strings (the first data row's sentence inline instead), numbers as numbers; the
    Type cell of row 3 left out (a sparse row, as Excel writes empty cells)."""
    out = []
    for r, row in enumerate(rows, 1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{'ABCDE'[c]}{r}"
            if r == 3 and c == 2:
                continue
            if isinstance(value, int):
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
            elif r == 2 and c == 4:
                cells.append(f'<c r="{ref}" t="inlineStr"><is><t>{escape(value)}</t></is></c>')
            else:
                strings.append(value)
                cells.append(f'<c r="{ref}" t="s"><v>{len(strings) - 1}</v></c>')
        out.append(f'<row r="{r}">{"".join(cells)}</row>')
    return f'<worksheet xmlns="{MAIN}"><sheetData>{"".join(out)}</sheetData></worksheet>'


def string_item(text: str) -> str:
    """A shared string; "Question Template" as two rich-text runs plus a phonetic run that is not its text."""
    if text == "Question Template":
        runs = '<r><t xml:space="preserve">Question </t></r><r><rPr><b/></rPr><t>Template</t></r>'
        return f'<si>{runs}<rPh sb="0" eb="1"><t>PHONETIC</t></rPh></si>'
    return f'<si><t xml:space="preserve">{escape(text)}</t></si>'


def xlsx_parts(rows: list[tuple]) -> dict[str, str]:
    """A minimal workbook whose first sheet (workbook order) is worksheets/sheet2.xml; sheet1.xml is a
    second sheet of junk that must not be read."""
    strings: list[str] = []
    prompts = sheet_xml(rows, strings)
    junk = sheet_xml([("Notes",), ("nothing here",)], strings)
    sst = "".join(string_item(s) for s in strings)
    return {
        "[Content_Types].xml": '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>',
        "_rels/.rels": f'<Relationships xmlns="{PKG}"/>',
        "xl/workbook.xml": (
            f'<workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets><sheet name="Prompts" sheetId="2" r:id="rId2"/>'
            '<sheet name="Notes" sheetId="1" r:id="rId1"/></sheets></workbook>'
        ),
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{PKG}">'
            f'<Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/>'
            f'<Relationship Id="rId2" Type="{REL}/worksheet" Target="/xl/worksheets/sheet2.xml"/>'
            f'<Relationship Id="rId3" Type="{REL}/sharedStrings" Target="sharedStrings.xml"/></Relationships>'
        ),
        "xl/sharedStrings.xml": f'<sst xmlns="{MAIN}">{sst}</sst>',
        "xl/worksheets/sheet1.xml": junk,
        "xl/worksheets/sheet2.xml": prompts,
    }


def write_xlsx(path: Path, parts: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in parts.items():
            z.writestr(name, '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n' + text)
    return path


@pytest.fixture(params=["xlsx", "csv"])
def table_path(request, tmp_path) -> Path:
    if request.param == "xlsx":
        return write_xlsx(tmp_path / "prompts.xlsx", xlsx_parts(ROWS))
    rows = [r if i != 2 else (*r[:2], "", *r[3:]) for i, r in enumerate(ROWS)]  # the same sparse cell
    return write_csv(tmp_path / "prompts.csv", rows)


# ---------------------------------------------------------------- reading, matching, filling


def test_xlsx_and_csv_read_the_same_rows(table_path):
    table = load_prompt_table(table_path)
    assert len(table) == 7 and [r.row for r in table.rows] == list(range(2, 9))
    first, second = table.rows[0], table.rows[1]
    assert (first.number, first.modality, first.kind, first.template) == ("1", "Audio", "Counting", T_SOUND)
    assert first.prompt == "Somebody plays a <Object> here."  # the inline-string cell
    assert second.kind == ""  # the cell left out of the row
    assert len(table.sha256) == 64


def test_questions_get_their_sentence_filled_by_placeholder_name(table_path):
    table = load_prompt_table(table_path)
    cases = [
        (
            question("Is there a <Object> sound? ", ("cello",)),
            "Somebody plays a cello here.",
        ),  # trailing space
        (question(T_LOUDER, ("sax", "left", "drum", "right")), "The drum at right faces the sax at left."),
        (
            question(T_RHYTHM, ("flute", "left", "erhu", "right")),
            "First the flute at left, then the erhu at right.",
        ),
        (question(T_LR_FL, ("right", "first")), "Look to the right side."),  # <LR>'s value, not the last one
        (question(T_BA, ("after", "piano")), "Listen for the piano."),
        (question(T_PLACE), "A stage somewhere."),  # single spaces
        (
            question("How many sounding <Object> in the video？", ("erhu",)),
            "Count every erhu.",
        ),  # full-width ？
        (question("What kind of musical instrument is it?"), None),  # not in the table
    ]
    for q, expected in cases:
        assert table.prompt(q) == expected, q.template
    assert table.prompt_for(T_SOUND, ["banjo"]) == "Somebody plays a banjo here."
    assert table.row_for("Where   is the performance ？ ").prompt == "A  stage   somewhere."
    with pytest.raises(
        AnnotationError, match=r"question_id 7: 2 templ_values \['a', 'b'\] for 1 placeholders"
    ):
        table.prompt(question(T_SOUND, ("a", "b"), qid=7))


def test_fill_prompt_occurrences_and_errors():
    tpl = "<Object> <LR> <Object> <LR> <FL>"
    values = ("o1", "l1", "o2", "l2", "f")
    assert fill_prompt("<Object> <Object> <FL>", tpl, values) == "o1 o2 f"
    assert (
        fill_prompt("<Object2> <LR1> <Object> <LR>", tpl, values) == "o2 l1 o2 l2"
    )  # k-th mention, or <Namek>
    assert fill_prompt("no placeholder", tpl, values) == "no placeholder"
    with pytest.raises(AnnotationError, match=r"<Object3> \(occurrence 3 of <Object>\) has no value"):
        fill_prompt("<Object3>", tpl, values, where="here")
    with pytest.raises(AnnotationError, match=r"^here: unknown placeholder <Instrument>"):
        fill_prompt("the <Instrument>", tpl, values, where="here")
    with pytest.raises(AnnotationError, match="the template '<FL>' has 0 <LR>"):
        fill_prompt("<LR>", "<FL>", ("first",))
    assert template_key("  How many   sounding <Object>？ ") == template_key("How many sounding <Object>?")


def test_every_released_template_spelling_matches_a_table_of_its_normal_forms(tmp_path):
    """A made-up sentence for each template of json_update/avqa-val.json but one, written with single spaces
    and "?": every question of the other templates gets its sentence, those of the missing one get None."""
    questions = load_annotations(DATA / "music-avqa" / "json_update" / "avqa-val.json")
    templates = sorted({template_key(q.template) for q in questions})
    assert len(templates) == 33 and any(q.template.endswith(("？", " ")) for q in questions)
    dropped = "Where is the performance"
    about = lambda t: "About " + " and ".join(f"<{n}>" for n in re.findall(r"<([^<>]*)>", t)) + "."  # noqa: E731
    rows = [HEADER] + [(i, "", "", t + "?", about(t)) for i, t in enumerate(templates, 1) if t != dropped]
    table = load_prompt_table(write_csv(tmp_path / "made_up.csv", rows))
    prompts = [table.prompt(q) for q in questions]
    missing = [q for q, p in zip(questions, prompts, strict=True) if p is None]
    assert missing and all(template_key(q.template) == dropped for q in missing)
    assert len(missing) == sum(template_key(q.template) == dropped for q in questions)
    for q, p in zip(questions, prompts, strict=True):
        if p is not None:
            assert "<" not in p and p == "About " + " and ".join(q.templ_values) + "."


def test_semicolon_csv_with_a_bom_and_blank_rows(tmp_path):
    rows = [HEADER, ("", "", "", "", ""), (1, "Audio", "Counting", T_SOUND, "A <Object>.")]
    table = load_prompt_table(write_csv(tmp_path / "excel.csv", rows, delimiter=";", bom=True))
    assert len(table) == 1 and table.rows[0].row == 3 and table.prompt_for(T_SOUND, ["pipa"]) == "A pipa."


# ---------------------------------------------------------------- bad tables: one line naming the file


def csv_case(tmp_path: Path, rows: list[tuple]) -> Path:
    return write_csv(tmp_path / "bad.csv", rows)


def xlsx_case(tmp_path: Path, edit) -> Path:
    parts = xlsx_parts(ROWS)
    edit(parts)
    return write_xlsx(tmp_path / "bad.xlsx", parts)


BAD = {
    "missing column": (
        lambda p: csv_case(p, [("No.", "Question Template"), (1, T_SOUND)]),
        r"row 1: no column 'Declarative Sentence Text Prompt' \(the header has \['No.', 'Question Template'\]\)",
    ),
    "empty sentence": (
        lambda p: csv_case(p, [HEADER, (1, "Audio", "Counting", T_SOUND, " ")]),
        r"row 2: empty 'Declarative Sentence Text Prompt'",
    ),
    "unknown placeholder in a sentence": (
        lambda p: csv_case(p, [HEADER, (1, "", "", T_SOUND, "A <Instrument>.")]),
        r"row 2: unknown placeholder <Instrument> in the sentence 'A <Instrument>.'",
    ),
    "unknown placeholder in a template": (
        lambda p: csv_case(p, [HEADER, (1, "", "", "Is <Thing> here?", "Yes.")]),
        r"row 2: unknown placeholder <Thing> in the template",
    ),
    "sentence placeholder the template lacks": (
        lambda p: csv_case(p, [HEADER, (1, "", "", T_PLACE, "On the <LR>.")]),
        r"row 2: the sentence's <LR> \(occurrence 1 of <LR>\) has no value",
    ),
    "one template, two sentences": (
        lambda p: csv_case(p, [HEADER, (1, "", "", T_SOUND, "A."), (2, "", "", T_SOUND + " ", "B.")]),
        r"rows 2 and 3 give the template .* different sentences \('A.' and 'B.'\)",
    ),
    "header only": (lambda p: csv_case(p, [HEADER]), r"has a header \(row 1\) but no rows"),
    "empty file": (lambda p: csv_case(p, []), r"the table is empty \(expected the columns No., Modalities"),
    "not UTF-8": (
        lambda p: (p / "latin.csv").write_bytes(b"No.,Question Template\n1,caf\xe9\n") and p / "latin.csv",
        r"not UTF-8 text \(byte 27\)",
    ),
    "missing file": (lambda p: p / "absent.xlsx", r"cannot be read \(No such file or directory\)"),
    "old Excel": (lambda p: p / "TextPrompt.xls", r"must be \.xlsx or \.csv"),
    "not a zip": (
        lambda p: (p / "text.xlsx").write_text("No.,Type\n") and p / "text.xlsx",
        r"not an \.xlsx workbook \(BadZipFile",
    ),
    "no workbook part": (
        lambda p: xlsx_case(p, lambda parts: parts.pop("xl/workbook.xml")),
        r"not an \.xlsx workbook \(it has no xl/workbook.xml\)",
    ),
    "broken sheet XML": (
        lambda p: xlsx_case(p, lambda parts: parts.update({"xl/worksheets/sheet2.xml": "<worksheet><row>"})),
        r"xl/worksheets/sheet2.xml is not valid XML",
    ),
    "shared string out of range": (
        lambda p: xlsx_case(
            p, lambda parts: parts.update({"xl/sharedStrings.xml": f'<sst xmlns="{MAIN}"/>'})
        ),
        r"cell A1: shared string '\d+' is not in the workbook's 0 strings",
    ),
    "no sheet": (
        lambda p: xlsx_case(
            p,
            lambda parts: parts.update({"xl/workbook.xml": f'<workbook xmlns="{MAIN}"><sheets/></workbook>'}),
        ),
        r"the workbook has no sheet",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_tables_raise_one_line_naming_the_file(tmp_path, case):
    make, pattern = BAD[case]
    path = make(tmp_path)
    with pytest.raises(AnnotationError, match=pattern) as e:
        load_prompt_table(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
