"""QA prompts for the `tspm` pack: the declarative sentence TSPM's prompt table gives a question's template.

TSPM (ACM MM 2024) encodes, beside each question, a "QA prompt": a declarative sentence chosen by the
question's template, from its table `dataset/TextPrompt.xlsx` (columns No., Modalities, Type, Question
Template, Declarative Sentence Text Prompt; one row per MUSIC-AVQA template, 33). That repository has no
license, so avaf ships no copy: the user passes the file (.xlsx or .csv), read here with the standard library.

Matching: a question matches the row whose template is its `question_content` up to whitespace and the final
"?" / "？" (the releases spell three templates with a trailing space or a full-width "？"). Filling: each
placeholder of the sentence takes the value of the same-named placeholder of the template, the k-th `<Object>`
of the sentence the k-th `<Object>` of the template; a numbered `<LR1>`, `<Object2>` names the occurrence.
A template the table does not cover gives None (the caller counts those); a malformed table is an
`AnnotationError` whose one line names the file, the row and the problem.

    table = load_prompt_table("TextPrompt.xlsx")
    sentence = table.prompt(question)  # str, or None when the table has no row for its template
"""

from __future__ import annotations

import csv
import hashlib
import io
import posixpath
import re
import zipfile
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from avaf.shared.avqa.annotations import PLACEHOLDERS, Question
from avaf.shared.errors import AnnotationError

COLUMNS = ("No.", "Modalities", "Type", "Question Template", "Declarative Sentence Text Prompt")
REQUIRED = ("Question Template", "Declarative Sentence Text Prompt")
SUFFIXES = (".xlsx", ".csv")

_SLOT = re.compile(r"<([^<>]*)>")  # any <...> in a template or sentence
_NAME = re.compile(r"([A-Za-z]+)(\d*)")  # inside a sentence's slot: name, optional occurrence number
_QUESTION_MARKS = ("?", "？")


@dataclass(frozen=True)
class PromptRow:
    """One row of the table; `row` is its row number in the file (the header's is 1 or more)."""

    template: str
    prompt: str
    row: int
    number: str = ""
    modality: str = ""
    kind: str = ""


def template_key(template: str) -> str:
    """What two spellings of one template share: single spaces, no final "?" / "？"."""
    text = " ".join(template.split())
    return text[:-1].rstrip() if text.endswith(_QUESTION_MARKS) else text


def fill_prompt(prompt: str, template: str, values: Sequence[str], where: str = "") -> str:
    """The sentence with each placeholder replaced by the value of the same-named placeholder of `template`
    (whose placeholders `values` fill in order): the k-th <Name> of the sentence, or <Namek>, takes the value
    of the template's k-th <Name>."""
    prefix = f"{where}: " if where else ""
    names = _SLOT.findall(template)
    if len(names) != len(values):
        raise AnnotationError(
            f"{prefix}{len(values)} templ_values {list(values)} for {len(names)} placeholders in {template!r}"
        )
    by_name: dict[str, list[str]] = {}
    for name, value in zip(names, values, strict=True):
        by_name.setdefault(name, []).append(value)
    seen: Counter[str] = Counter()

    def value_of(slot: re.Match) -> str:
        parsed = _NAME.fullmatch(slot.group(1))
        if parsed is None or parsed.group(1) not in PLACEHOLDERS:
            raise AnnotationError(
                f"{prefix}unknown placeholder {slot.group(0)} in the sentence {prompt!r} "
                f"(known: {', '.join(f'<{p}>' for p in PLACEHOLDERS)}, optionally numbered as <LR2>)"
            )
        name, number = parsed.groups()
        seen[name] += 1
        k, have = int(number) if number else seen[name], by_name.get(name, [])
        if not 1 <= k <= len(have):
            raise AnnotationError(
                f"{prefix}the sentence's {slot.group(0)} (occurrence {k} of <{name}>) has no value: the "
                f"template {template!r} has {len(have)} <{name}>"
            )
        return have[k - 1]

    return " ".join(_SLOT.sub(value_of, prompt).split())


class PromptTable:
    """A prompt table read from `path`: its rows, indexed by `template_key`, and the file's sha256."""

    def __init__(self, path: Path, rows: Sequence[PromptRow], sha256: str = "") -> None:
        self.path, self.rows, self.sha256 = path, tuple(rows), sha256
        self._by_key: dict[str, PromptRow] = {}
        for r in self.rows:
            first = self._by_key.setdefault(template_key(r.template), r)
            if first.prompt != r.prompt:
                raise AnnotationError(
                    f"{path}: rows {first.row} and {r.row} give the template {r.template!r} different "
                    f"sentences ({first.prompt!r} and {r.prompt!r})"
                )

    def __len__(self) -> int:
        return len(self._by_key)

    def row_for(self, template: str) -> PromptRow | None:
        """The row of this template, or None when the table does not cover it."""
        return self._by_key.get(template_key(template))

    def prompt_for(self, template: str, values: Sequence[str], where: str = "") -> str | None:
        """The filled-in sentence for a template and its values (in template order), or None if not covered."""
        row = self.row_for(template)
        return None if row is None else fill_prompt(row.prompt, template, values, where)

    def prompt(self, question: Question) -> str | None:
        """The filled-in sentence for a parsed MUSIC-AVQA question, or None if its template is not covered."""
        where = f"question_id {question.question_id}"
        return self.prompt_for(question.template, question.templ_values, where)


def load_prompt_table(path: str | Path) -> PromptTable:
    """Read and check a prompt table (.xlsx: its first sheet; .csv: UTF-8, comma, semicolon or tab)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise AnnotationError(
            f"{path}: a prompt table must be {' or '.join(SUFFIXES)} (an Excel 97-2003 .xls: save it as .xlsx)"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise AnnotationError(f"{path}: cannot be read ({e.strerror or e})") from None
    cells = _read_xlsx(data, path) if path.suffix.lower() == ".xlsx" else _read_csv(data, path)
    return PromptTable(path, _parse_rows(cells, path), hashlib.sha256(data).hexdigest())


def _parse_rows(cells: list[tuple[int, list[str]]], path: Path) -> list[PromptRow]:
    """Header (the first non-blank row) to columns; every later non-blank row to a checked PromptRow."""
    cells = [(n, [c.strip() for c in row]) for n, row in cells if any(c.strip() for c in row)]
    if not cells:
        raise AnnotationError(f"{path}: the table is empty (expected the columns {', '.join(COLUMNS)})")
    header_row, header = cells[0]
    norm = lambda s: " ".join(s.split()).casefold()  # noqa: E731
    index = {norm(h): i for i, h in reversed(list(enumerate(header))) if h}
    missing = [c for c in REQUIRED if norm(c) not in index]
    if missing:
        raise AnnotationError(
            f"{path}: row {header_row}: no column {' or '.join(map(repr, missing))} (the header has "
            f"{[h for h in header if h]}); expected TSPM's columns {', '.join(COLUMNS)}"
        )
    col = {c: index.get(norm(c)) for c in COLUMNS}
    get = lambda row, c: row[col[c]] if col[c] is not None and col[c] < len(row) else ""  # noqa: E731
    rows = []
    for n, row in cells[1:]:
        template, prompt = get(row, "Question Template"), get(row, "Declarative Sentence Text Prompt")
        for name, text in (("Question Template", template), ("Declarative Sentence Text Prompt", prompt)):
            if not text:
                raise AnnotationError(
                    f"{path}: row {n}: empty {name!r} (the row has {[c for c in row if c]})"
                )
        for slot in _SLOT.findall(template):
            if slot not in PLACEHOLDERS:
                raise AnnotationError(
                    f"{path}: row {n}: unknown placeholder <{slot}> in the template {template!r}"
                )
        fill_prompt(
            prompt, template, _SLOT.findall(template), where=f"{path}: row {n}"
        )  # every slot resolves
        meta = (get(row, "No."), get(row, "Modalities"), get(row, "Type"))
        rows.append(PromptRow(template, prompt, n, *meta))
    if not rows:
        raise AnnotationError(f"{path}: the table has a header (row {header_row}) but no rows")
    return rows


def _read_csv(data: bytes, path: Path) -> list[tuple[int, list[str]]]:
    """(record number, cells) of a UTF-8 CSV (a BOM, as Excel writes, is skipped)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(
            f"{path}: not UTF-8 text (byte {e.start}); save the table as CSV UTF-8"
        ) from None
    first = text.split("\n", 1)[0]
    delimiter = max(",;\t", key=first.count) if any(d in first for d in ",;\t") else ","
    try:
        return list(enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), 1))
    except csv.Error as e:
        raise AnnotationError(f"{path}: not a readable CSV table ({e})") from None


# ---------------------------------------------------------------- .xlsx: a zip of XML (ECMA-376 SpreadsheetML)


def _read_xlsx(data: bytes, path: Path) -> list[tuple[int, list[str]]]:
    """(row number, cells) of the workbook's first sheet, every cell as text."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            sheet, strings = _first_sheet(z, path), _shared_strings(z, path)
            root = _xml(z, sheet, path)
    except (zipfile.BadZipFile, zlib.error, NotImplementedError, EOFError, ValueError) as e:
        if isinstance(e, AnnotationError):
            raise
        raise AnnotationError(f"{path}: not an .xlsx workbook ({type(e).__name__}: {e})") from None
    rows, last = [], 0
    for row in root.findall(".//{*}row"):
        r = row.get("r", "")
        last = int(r) if r.isdigit() else last + 1
        cells: dict[int, str] = {}
        for c in row.findall("{*}c"):
            ref = c.get("r") or ""
            col = _column(ref)
            col = col if col >= 0 else max(cells, default=-1) + 1  # no reference: the next column
            cells[col] = _cell_text(c, strings, f"{path}: cell {ref or f'{col + 1} of row {last}'}")
        rows.append((last, [cells.get(i, "") for i in range(max(cells, default=-1) + 1)]))
    return rows


def _xml(z: zipfile.ZipFile, name: str, path: Path) -> ET.Element:
    try:
        return ET.fromstring(z.read(name))
    except KeyError:
        raise AnnotationError(f"{path}: not an .xlsx workbook (it has no {name})") from None
    except ET.ParseError as e:
        raise AnnotationError(f"{path}: {name} is not valid XML ({e})") from None


def _relationships(z: zipfile.ZipFile, path: Path) -> list[ET.Element]:
    """The workbook's relationships (xl/_rels/workbook.xml.rels), [] when the part is missing."""
    if "xl/_rels/workbook.xml.rels" not in z.namelist():
        return []
    return list(_xml(z, "xl/_rels/workbook.xml.rels", path).findall("{*}Relationship"))


def _part(target: str) -> str:
    """A relationship target as a name in the zip (targets are relative to xl/, or absolute from the root)."""
    return target.lstrip("/") if target.startswith("/") else posixpath.normpath(posixpath.join("xl", target))


def _first_sheet(z: zipfile.ZipFile, path: Path) -> str:
    """The zip name of the first sheet in the workbook's order (not the first file name)."""
    sheet = _xml(z, "xl/workbook.xml", path).find("{*}sheets/{*}sheet")
    if sheet is None:
        raise AnnotationError(f"{path}: the workbook has no sheet")
    rid = next((v for k, v in sheet.attrib.items() if k.endswith("}id")), None)
    for rel in _relationships(z, path):
        if rel.get("Id") == rid and rel.get("Target"):
            return _part(rel.get("Target"))
    return "xl/worksheets/sheet1.xml"


def _shared_strings(z: zipfile.ZipFile, path: Path) -> list[str]:
    """The shared-string table ([] for a workbook that keeps its text inline)."""
    targets = [
        _part(r.get("Target", ""))
        for r in _relationships(z, path)
        if r.get("Type", "").endswith("/sharedStrings")
    ]
    name = targets[0] if targets else "xl/sharedStrings.xml"
    if name not in z.namelist():
        return []
    return [_rich_text(si) for si in _xml(z, name, path).findall("{*}si")]


def _rich_text(node: ET.Element) -> str:
    """Text of a string item: its <t>, or its runs' <t>s; phonetic runs (<rPh>) are not the text."""
    parts = []
    for child in node:
        tag = child.tag.rsplit("}", 1)[-1]
        if tag == "t":
            parts.append(child.text or "")
        elif tag == "r":
            parts += [t.text or "" for t in child.findall("{*}t")]
    return "".join(parts)


def _column(ref: str) -> int:
    """0-based column of a cell reference: A1 -> 0, Z9 -> 25, AA10 -> 26; -1 without letters."""
    col = 0
    for ch in re.match(r"[A-Za-z]*", ref).group(0).upper():
        col = col * 26 + ord(ch) - ord("A") + 1
    return col - 1


def _cell_text(c: ET.Element, strings: list[str], where: str) -> str:
    """A cell's value as text: shared (t="s"), inline (t="inlineStr"), boolean, or the stored value."""
    kind = c.get("t", "n")
    if kind == "inlineStr":
        node = c.find("{*}is")
        return _rich_text(node) if node is not None else ""
    v = c.find("{*}v")
    text = (v.text or "") if v is not None else ""
    if kind == "s":
        if not text.strip().isdigit() or int(text) >= len(strings):
            raise AnnotationError(
                f"{where}: shared string {text!r} is not in the workbook's {len(strings)} strings"
            )
        return strings[int(text)]
    if kind == "b":
        return "TRUE" if text.strip() == "1" else "FALSE"
    return text
