"""The feature-store schema, version 2: every HDF5 path, dtype and shape avaf writes or reads.

This is the contract between `avaf-extract` and `avaf-train` (DESIGN.md §2). Nothing else in the project
spells an HDF5 path: the writer, the reader, `avaf-inspect` and the tests all go through the tables below.

Layout of one file (a shard and the merged `feats.h5` share it; the root attribute `kind` tells them apart):

    /                       attrs: format, schema_version, kind, avaf_version, created, config (JSON),
                                   signature (JSON: what determines the numbers; shards must agree),
                                   random_weights (JSON list of encoders on random weights; [] when none),
                                   feature_sets (JSON: every feature array, its encoder and preprocessing)
    /videos/<column>        one row per video        (ids, offset, length, source path, ...)
    /seconds/<column>       one row per second       (all seconds of all videos stacked; rows
                                                      offset[v] .. offset[v]+length[v] belong to video v)
    /questions/<column>     one row per question     (ids, text, type, answer, split, sentence feature, ...)
    /words/<column>         one row per BPE token    (rows word_offset[q] .. +word_length[q] of question q)
    /runs/<column>          one row per attempted video: status "ok" / "failed" and the error

Flat ragged arrays rather than one group per video: HDF5 groups with tens of thousands of members are
slow, and a video is one contiguous slice of each per-second array, so it is read in one call.

Feature sets (schema 2). The feature arrays are named sets of arrays (`FeatureArray`): a set's per-second
arrays are further columns of /seconds, its per-question arrays further columns of /questions (a fixed
shape per question) and its ragged per-token arrays further columns of /words. The `avaf` set is stored
where schema 1 stored it (/seconds/visual_tokens, visual_pooled, audio, /questions/sentence,
/words/features); array <name> of any other set <set> is /<table>/<set>/<name>. `layout(sets)` gives the
tables of a file holding `sets`; a schema-1 file holds the `avaf` set only, described by its signature
(sets.py), and reads as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import numpy as np

FORMAT_NAME = "avaf-features"
SCHEMA_VERSION = 2  # what this avaf writes
READABLE_VERSIONS = (1, 2)  # 1: the avaf set only, no feature_sets attribute (read as the avaf set)

KIND_SHARD = "shard"
KIND_STORE = "store"

ROOT_ATTRS = (
    "format",
    "schema_version",
    "kind",
    "avaf_version",
    "created",
    "config",
    "signature",
    "random_weights",
)
SETS_ATTR = "feature_sets"  # root attribute of schema 2 (FeatureArray.to_json of every array)

# The time axis: one row per second, the frame nearest t + 0.5 s and the 16 kHz mono audio of second t.
# The one place these numbers live; decoding, the encoders and the synthetic set all import them.
FPS = 1
SAMPLE_RATE = 16_000  # Hz: VGGish's rate

STR = "str"  # variable-length UTF-8 string column


@dataclass(frozen=True)
class SameAs:
    """The fill of a column added to schema 1 after its first release: files written before hold the
    values of another column of the same table (e.g. a question's audio comes from its own video)."""

    column: str


@dataclass(frozen=True)
class Column:
    """One dataset of a table: its dtype and the shape of one row (dims named in `tail`).

    `fill`: None for a column every schema-1 file has. A column added later carries what files written
    before it read as: a constant (one per row) or `SameAs(other column)`. Writers always write it; the
    reader, the merge and `avaf-inspect` fill it in for older files, so adding a column never makes a
    store unreadable.
    """

    name: str
    dtype: object  # a numpy dtype, or STR
    tail: tuple[str | int, ...] = ()
    doc: str = ""
    fill: object = None
    feature: str = ""  # "<set>/<array>" for a feature array (present only where its set is); "" otherwise


@dataclass(frozen=True)
class Table:
    """A group of equal-length columns: one row per video, second, question, word or run entry."""

    group: str
    columns: tuple[Column, ...]
    doc: str = ""

    def path(self, column: str) -> str:
        if column not in {c.name for c in self.columns}:
            raise KeyError(f"{self.group} has no column {column!r}")
        return f"{self.group}/{column}"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.group} has no column {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def features(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.feature)


F16 = np.dtype("float16")
F64 = np.dtype("float64")
I64 = np.dtype("int64")
I32 = np.dtype("int32")
BOOL = np.dtype("bool")

VIDEOS = Table(
    "videos",
    (
        Column("video_id", STR, (), "unique id: the file stem"),
        Column("offset", I64, (), "first row of this video in /seconds"),
        Column("length", I32, (), "T, the number of whole seconds"),
        Column("source_path", STR, (), "path of the source file as given to avaf-extract"),
        Column("source_size", I64, (), "bytes"),
        Column("duration", F64, (), "seconds: where the video ends on the timeline (see timestamp)"),
        Column("has_audio", BOOL, (), "False: no audio stream, audio is all zeros"),
        Column("audio_seconds", I32, (), "seconds with real audio (< length: the rest is zero-filled)"),
        Column("decoder", STR, (), "backend that served the frames: decord or pyav"),
        Column(
            "streams",
            STR,
            (),
            "JSON: chosen video/audio stream index, codec, size, rate; video_start, audio_start (s on the "
            "timeline), audio_gaps, rotation (degrees counter-clockwise applied) and mirrored",
        ),
    ),
    "one row per video",
)

SECONDS = Table(
    "seconds",
    (
        Column(
            "visual_tokens",
            F16,
            ("N", "D"),
            "CLIP ViT tokens after ln_post and proj; token 0 = CLS",
            feature="avaf/visual_tokens",
        ),
        Column(
            "visual_pooled",
            F16,
            ("D",),
            "CLIP image embedding (equals token 0)",
            feature="avaf/visual_pooled",
        ),
        Column(
            "audio",
            F16,
            ("A",),
            "VGGish embedding after the last ReLU, no PCA (A = 128)",
            feature="avaf/audio",
        ),
        Column("audio_valid", BOOL, (), "False where the audio was missing and zero-filled"),
        Column(
            "timestamp",
            F64,
            (),
            "presentation time (s) of the frame used for this second; 0 = the video's start, or the "
            "audio's when it starts over 0.1 s earlier",
        ),
    ),
    "one row per second of every video, videos stacked in /videos order",
)

QUESTIONS = Table(
    "questions",
    (
        Column("question_id", I64, (), "question_id of the annotation file"),
        Column("video_id", STR, (), "the video it asks about"),
        Column(
            "audio_video_id",
            STR,
            (),
            "the video whose audio goes with the question: video_id, or another video for "
            "MUSIC-AVQA-v2.0's unmatch_audio rows",
            fill=SameAs("video_id"),
        ),
        Column("split", STR, (), "train / val / test / ..."),
        Column("text", STR, (), "question with its placeholders filled in"),
        Column("type", STR, (), 'modality and kind, e.g. "Audio-Visual/Counting"'),
        Column("answer", STR, (), "answer string (one of the 42 of manifests/answers.json)"),
        Column("word_offset", I64, (), "first row of this question in /words"),
        Column("word_length", I32, (), "L, the real BPE token count (start and end tokens included)"),
        Column(
            "sentence",
            F16,
            ("D",),
            "CLIP text embedding: the end-of-text token's projected output",
            feature="avaf/sentence",
        ),
    ),
    "one row per question",
)

WORDS = Table(
    "words",
    (Column("features", F16, ("D",), "CLIP text encoder output per token, projected", feature="avaf/words"),),
    "one row per BPE token of every question, questions stacked in /questions order",
)

RUNS = Table(
    "runs",
    (
        Column("video_id", STR, (), ""),
        Column("source_path", STR, (), ""),
        Column("status", STR, (), "ok or failed"),
        Column("error", STR, (), "empty when ok"),
    ),
    "one row per attempted video: the run record a resumed job reads",
)

TABLES: tuple[Table, ...] = (VIDEOS, SECONDS, QUESTIONS, WORDS, RUNS)  # a file holding the avaf set only
TABLE_BY_GROUP = {t.group: t for t in TABLES}

# Ragged parents: child table rows [offset, offset + length) belong to a parent row.
RAGGED = {
    "seconds": (VIDEOS, "offset", "length"),
    "words": (QUESTIONS, "word_offset", "word_length"),
}

STATUS_OK = "ok"
STATUS_FAILED = "failed"

# Storage: features in float16, uncompressed, chunks of about 1 MB along the row axis.
CHUNK_BYTES = 1 << 20


def chunk_rows(row_bytes: int) -> int:
    """Rows per chunk so a chunk is about CHUNK_BYTES (at least one row)."""
    return max(1, CHUNK_BYTES // max(1, row_bytes))


def numpy_dtype(column: Column) -> np.dtype:
    """The dtype arrays of this column have in memory (strings come back as Python str objects)."""
    return np.dtype(object) if column.dtype == STR else np.dtype(column.dtype)


# -- feature sets (schema 2) -------------------------------------------------------------------------------

AVAF = (
    "avaf"  # the set avaf-extract writes by default and avaf-train reads: CLIP ViT tokens, VGGish, CLIP text
)
ROLES = ("visual", "audio", "text")
FEATURE_TABLES = ("seconds", "questions", "words")  # a row per second, per question, per token (ragged)
# the avaf set's arrays: name -> (table, column) where schema 1 stores them
AVAF_COLUMNS = {c.feature.split("/")[1]: (t.group, c.name) for t in TABLES for c in t.features}
NAME = re.compile(r"[a-z][a-z0-9_]*\Z")  # a set's name and its arrays'
RESERVED = {c.name for t in TABLES for c in t.columns}  # no set is named so: it would shadow a column


@dataclass(frozen=True)
class Encoder:
    """What made a feature array: the model's name, its pretrained tag ("openai", "default", a file name,
    "random"), the sha256 of the weights actually loaded and whether they were a random initialisation."""

    model: str = ""
    pretrained: str = ""
    weights_sha256: str = ""
    random: bool = False
    library: str = ""  # open_clip, timm, avaf (VGGish), ...


@dataclass(frozen=True)
class FeatureArray:
    """One named array of a feature set: which rows it has, what it holds, what made it.

    shape: one row's shape as stored: (N, D) or (D,) per second, (D,) or (77, D) per question, (D,) per
    token; () while unknown (the writer and the reader fill it in from the dataset).
    """

    set: str
    name: str
    table: str  # one of FEATURE_TABLES; "words": rows word_offset .. + word_length of each question
    role: str  # one of ROLES
    encoder: Encoder = field(default_factory=Encoder)
    preprocessing: dict = field(default_factory=dict)
    shape: tuple[int, ...] = ()
    doc: str = ""

    @property
    def key(self) -> str:
        """Its column in its table: the schema-1 name for the avaf set, "<set>/<name>" for any other."""
        return AVAF_COLUMNS[self.name][1] if self.set == AVAF else f"{self.set}/{self.name}"

    @property
    def path(self) -> str:
        return f"{self.table}/{self.key}"

    @property
    def width(self) -> int:
        return int(self.shape[-1]) if self.shape else 0

    @property
    def tokens(self) -> int | None:
        """Tokens per row: N of (N, D), 1 of (D,); None for a /words array (a question's word_length)."""
        if self.table == "words":
            return None
        return int(self.shape[-2]) if len(self.shape) >= 2 else 1

    def to_json(self) -> dict:
        return {
            "table": self.table,
            "path": "/" + self.path,
            "role": self.role,
            "encoder": vars(self.encoder).copy(),
            "preprocessing": self.preprocessing,
            "dtype": str(F16),
            "shape": list(self.shape),
            "width": self.width,
            "tokens": self.tokens,
            "doc": self.doc,
        }

    @classmethod
    def from_json(cls, set_name: str, name: str, d: dict) -> FeatureArray:
        known = set(Encoder.__dataclass_fields__)
        encoder = Encoder(**{k: v for k, v in d.get("encoder", {}).items() if k in known})
        shape = tuple(int(x) for x in d.get("shape", ()))
        return cls(
            set_name,
            name,
            d["table"],
            d["role"],
            encoder,
            d.get("preprocessing", {}),
            shape,
            d.get("doc", ""),
        )


Sets = dict[str, dict[str, FeatureArray]]  # set -> array name -> FeatureArray


def layout(sets: Sets) -> tuple[Table, ...]:
    """The tables of a file holding `sets`: the avaf set's columns where it has them, then every other
    set's arrays (by set, then name) as further columns. `layout({AVAF: all five})` is TABLES."""
    avaf = sets.get(AVAF, {})
    tables = []
    for table in TABLES:
        columns = [c for c in table.columns if not c.feature or c.feature.split("/")[1] in avaf]
        columns += [
            Column(a.key, F16, a.shape, a.doc, feature=f"{a.set}/{a.name}")
            for s in sorted(sets)
            if s != AVAF
            for _, a in sorted(sets[s].items())
            if a.table == table.group
        ]
        tables.append(replace(table, columns=tuple(columns)))
    return tuple(tables)
