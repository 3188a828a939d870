"""The per-file `.npy` folders the public AVQA code reads: `feats.h5` <-> vggish/, clip_vit_b32/, clip_word/, ...

Export writes the folders GeWu-Lab/MUSIC-AVQA, PSTP-Net, TSPM, QA-TIGER and AVAF-Net load, so their code trains
on avaf's features; import turns such a folder back into a valid `feats.h5`, so `avaf-train` runs without
re-extracting (DESIGN.md §1: the feature file is meant for other AVQA models too). Export then import gives
back the store's arrays bit for bit. Folder names, shapes, the two layouts, how import finds each question's
real word count and what it checks: docs/reuse.md, "The AVQA repositories' `.npy` layout".

    export_npy("feats.h5", "npy/")                                  # = avaf-export --feats feats.h5 --out npy/
    import_npy("npy/", "copy.h5", ImportOptions(pad_short_audio=True))  # = avaf-import --npy npy/ --out copy.h5 ...
"""

# Over STYLE.md's ~400 lines on purpose: export and import are two halves of one file format (folder names,
# shapes, manifest), kept in one module so they cannot drift apart.

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avaf.shared.avqa.annotations import load_questions
from avaf.shared.errors import ExchangeError, OutputError
from avaf.shared.files import atomic_path, check_fresh_output
from avaf.shared.store import schema
from avaf.shared.store.merge import build_store
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import (
    QuestionFeatures,
    ShardWriter,
    VideoFeatures,
    complete_shards,
    new_shard_path,
)
from avaf.shared.version import avaf_version

log = logging.getLogger(__name__)

AUDIO, VISUAL, POOLED = "vggish", "clip_vit_b32", "clip_vit_b32_pooled"  # one file per video
WORDS, SENTENCE = "clip_word", "clip_qst"  # one file per question
MANIFEST = "manifest.json"
EXPORT_DIRS = (AUDIO, VISUAL, POOLED, WORDS, SENTENCE)
MANIFEST_FORMAT = "avaf-npy-export"
CONTEXT_LENGTH = 77  # CLIP's text context: the repositories pad word features to it
DTYPES = ("float32", "float16")
LAYOUTS = ("repos", "exact")
WORD_LENGTHS = ("auto", "tokenizer", "all")
IMPORTED_DECODER = "imported"
RESTORED = ("source_path", "source_size", "duration", "has_audio", "decoder", "streams")
VIDEO_META = ("video_id", "length", *RESTORED, "audio_valid", "timestamp")
QUESTION_META = ("question_id", "video_id", "audio_video_id", "split", "text", "type", "answer")
AVAF_PER_SECOND = ("visual_tokens", "visual_pooled", "audio", "audio_valid", "timestamp")  # what it exports
QUESTIONS_PER_READ = 4096
QUESTIONS_PER_SHARD = 8192


def _save(path: Path, array: np.ndarray) -> None:
    """np.save under a temporary name, then rename: a killed export leaves no half-written file (no fsync
    per file, as before the shared helper: an export writes one file per video and per question)."""
    with atomic_path(path, durable=False) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


# ---------------------------------------------------------------------------------------------- export


@dataclass(frozen=True)
class ExportOptions:
    """How `export_npy` writes (docs/reuse.md): the dtype of the files, the question layout ("repos":
    clip_word (1, context_length, D) zero-padded and clip_qst (1, D); "exact": (L, D) and (D,)), and whether
    an earlier export in the folder is replaced. pad_to: the seconds every video gets in the feature-pack
    layouts (packs_export.py); npy refuses it."""

    dtype: str = "float32"
    layout: str = "repos"
    context_length: int = CONTEXT_LENGTH
    overwrite: bool = False
    pad_to: int | None = None  # the feature-pack layouts only (packs_export.py): seconds every video gets


@dataclass
class ExportReport:
    out: Path
    videos: int
    questions: int
    files: int
    dtype: str
    layout: str
    word_shape: str

    def lines(self) -> list[str]:
        return [
            f"wrote {self.videos} videos and {self.questions} questions to {self.out} "
            f"({self.files} files, {self.dtype}, layout {self.layout}: {WORDS} {self.word_shape})",
            f"manifest: {self.out / MANIFEST}",
        ]


def export_npy(
    feats: str | os.PathLike, out: str | os.PathLike, options: ExportOptions | None = None
) -> ExportReport:
    """Write every video and question of `feats` as .npy files in the AVQA repositories' layout, and a manifest.

    A folder that already holds any of these files or folders (an earlier export, or the repositories' own
    features) is refused unless `options.overwrite`, which deletes exactly those first; nothing else there
    is touched.
    """
    o = options or ExportOptions()
    if o.dtype not in DTYPES or o.layout not in LAYOUTS:
        raise ValueError(f"dtype must be one of {DTYPES} and layout one of {LAYOUTS}")
    if o.pad_to is not None:
        raise ExchangeError("--pad-to applies to the qa-tiger, tspm, av-master and stg layouts, not to npy")
    out = Path(out)
    with FeatureStore(feats) as fs:  # the input first: a bad store leaves no folder behind
        fs.require([(schema.AVAF, name) for name in schema.AVAF_COLUMNS], "avaf-export (the avaf set)")
        if o.layout == "repos":  # before the folder: a refused export deletes nothing, --overwrite or not
            _check_context(fs.questions(), o.context_length)
        check_fresh_output(out, "an export", (*EXPORT_DIRS, MANIFEST), o.overwrite, "choose a new --out")
        for name in EXPORT_DIRS:
            (out / name).mkdir(exist_ok=True)
        shape = fs.shape(schema.SECONDS, "visual_tokens")[1:]
        if shape != (50, 512):
            log.warning(
                "%s: visual tokens are %s per second; the repositories expect (50, 512)", feats, shape
            )
        videos = [_export_video(fs, vid, out, o.dtype) for vid in fs.video_ids]
        questions = _export_questions(fs, out, o)
        width = fs.shape(schema.WORDS, "features")[1]
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": 1,
            "avaf_version": avaf_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": str(fs.path),
            "schema_version": fs.schema_version,
            "config": fs.config,
            "signature": fs.signature,
            "random_weights": fs.random_weights,
            "dtype": o.dtype,
            "layout": o.layout,
            "context_length": o.context_length,
            "videos": videos,
            "questions": questions,
        }
    manifest["files"] = [f"{d}/{v['video_id']}.npy" for d in (AUDIO, VISUAL, POOLED) for v in videos]
    manifest["files"] += [f"{d}/{q['question_id']}.npy" for d in (WORDS, SENTENCE) for q in questions]
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    word_shape = f"(1, {o.context_length}, {width})" if o.layout == "repos" else f"(L, {width})"
    log.info("exported %d videos and %d questions to %s", len(videos), len(questions), out)
    return ExportReport(
        out, len(videos), len(questions), len(manifest["files"]), o.dtype, o.layout, word_shape
    )


def _export_video(fs: FeatureStore, vid: str, out: Path, dtype: str) -> dict:
    v = fs.video(vid, fields=AVAF_PER_SECOND)
    _save(out / AUDIO / f"{vid}.npy", v["audio"].astype(dtype))
    _save(out / VISUAL / f"{vid}.npy", v["visual_tokens"].astype(dtype))
    _save(out / POOLED / f"{vid}.npy", v["visual_pooled"].astype(dtype))
    # numpy values to JSON ones; float64 -> JSON -> float64 is exact (shortest repr round-trips)
    return {k: v[k].tolist() if isinstance(v[k], (np.ndarray, np.generic)) else v[k] for k in VIDEO_META}


def _check_context(q: dict[str, np.ndarray], context: int) -> None:
    """ExchangeError naming the first question with more word rows than clip_word's `context` rows."""
    longer = np.flatnonzero(q["word_length"] > context)
    if len(longer):
        qid, n = int(q["question_id"][longer[0]]), int(q["word_length"][longer[0]])
        raise ExchangeError(f"question {qid} has {n} word rows, more than --context-length {context}")


def _export_questions(fs: FeatureStore, out: Path, options: ExportOptions) -> list[dict]:
    dtype, layout, context = options.dtype, options.layout, options.context_length
    q = fs.questions()
    entries = []
    for a in range(0, len(q["question_id"]), QUESTIONS_PER_READ):
        part = slice(a, a + QUESTIONS_PER_READ)
        words, offset = fs.load_words(q["word_offset"][part], q["word_length"][part])
        for i, row in enumerate(range(a, a + len(offset))):
            qid, n = int(q["question_id"][row]), int(q["word_length"][row])
            w, s = words[offset[i] : offset[i] + n].astype(dtype), q["sentence"][row].astype(dtype)
            if layout == "repos":  # n <= context: _check_context
                w = np.concatenate([w, np.zeros((context - n, w.shape[1]), dtype)])[None]  # (1, C, D)
                s = s[None]  # (1, D)
            _save(out / WORDS / f"{qid}.npy", w)
            _save(out / SENTENCE / f"{qid}.npy", s)
            entries.append(
                {k: str(q[k][row]) for k in QUESTION_META[1:]} | {"question_id": qid, "word_length": n}
            )
    return entries


# ---------------------------------------------------------------------------------------------- import


@dataclass
class Skipped:
    kind: str  # "video" or "question"
    id: str
    reason: str


@dataclass
class ImportReport:
    out: Path
    videos: int = 0
    questions: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(s.kind == kind for s in self.skipped)

    def lines(self, limit: int = 50) -> list[str]:
        """One line per skipped item (at most `limit` per kind), then the summary."""
        lines = []
        for kind in ("video", "question"):
            items = [s for s in self.skipped if s.kind == kind]
            lines += [f"skipped {kind} {s.id}: {s.reason}" for s in items[:limit]]
            if len(items) > limit:
                lines.append(f"... and {len(items) - limit} more skipped {kind}s")
        lines.append(
            f"imported {self.videos} videos and {self.questions} questions into {self.out}; "
            f"skipped {self.count('video')} videos and {self.count('question')} questions"
        )
        return lines


class _Skip(Exception):
    """One video or question that cannot be imported; the message is the reason."""


@dataclass(frozen=True)
class ImportOptions:
    """How `import_npy` reads a folder (docs/reuse.md).

    annotations, split: where questions come from (files or folders; the split of files whose name does not
    say it); none: the folder's avaf manifest. word_length: how a question's real clip_word rows are found
    where the manifest does not say ("auto", "tokenizer", "all"). pad_short_audio: audio shorter than the
    visual features is zero-filled and flagged (as avaf-extract does) instead of skipping the video.
    overwrite: an existing store is replaced (only once the new one is complete).
    """

    annotations: tuple[str | os.PathLike, ...] = ()
    split: str | None = None
    word_length: str = "auto"
    pad_short_audio: bool = False
    videos_per_shard: int = 64
    overwrite: bool = False


@dataclass
class _Job:
    """One import under way: where from, where its shards go, and what its items must agree on."""

    npy_dir: Path
    folder: Path  # the temporary folder of shards the store is built from
    meta: dict  # the shards' config, signature and random weights (_store_meta)
    options: ImportOptions
    report: ImportReport
    dims: dict[str, int] = field(default_factory=dict)  # N and D: the first item imported fixes them


def import_npy(
    npy_dir: str | os.PathLike, out: str | os.PathLike, options: ImportOptions | None = None
) -> ImportReport:
    """Build a store at `out` from an .npy folder; inconsistent items are skipped and reported, never fatal.

    An existing `out` is refused unless `options.overwrite`; even then it is replaced only when the new store
    is complete, so a failed import leaves it as it was.
    """
    o = options or ImportOptions()
    npy_dir, out = Path(npy_dir), Path(out)
    if out.exists() and not o.overwrite:  # e.g. the feats.h5 of a long extraction, named by mistake
        raise OutputError(f"{out}: already exists; choose a new --out, or pass --overwrite to replace it")
    if o.word_length not in WORD_LENGTHS:
        raise ValueError(f"word_length must be one of {WORD_LENGTHS}, got {o.word_length!r}")
    if not (npy_dir / AUDIO).is_dir() and not (npy_dir / VISUAL).is_dir():
        raise ExchangeError(f"{npy_dir}: no {AUDIO}/ or {VISUAL}/ folder of .npy files")
    manifest = _read_manifest(npy_dir)
    table = _question_table(o.annotations, o.split, manifest)
    meta = _store_meta(npy_dir, manifest, o.word_length)
    report = ImportReport(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}.import-", dir=out.parent))
    try:
        job = _Job(npy_dir, folder, meta, o, report)
        imported = _import_videos(job, manifest)
        _import_questions(job, table, imported)
        if not report.videos and not report.questions:
            reasons = "; ".join(f"{s.id}: {s.reason}" for s in report.skipped[:3])
            raise ExchangeError(
                f"{npy_dir}: nothing could be imported ({reasons or 'the folders are empty'})"
            )
        build_store(complete_shards(folder), out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    log.info("%s", report.lines()[-1])
    return report


def _read_manifest(npy_dir: Path) -> dict | None:
    path = npy_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExchangeError(f"{path}: not a JSON manifest ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ExchangeError(f"{path}: not an avaf-export manifest (format is not {MANIFEST_FORMAT!r})")
    return manifest


def _store_meta(npy_dir: Path, manifest: dict | None, word_length: str) -> dict:
    """Config, signature and random weights of the imported store."""
    config = {"imported_from": str(npy_dir.resolve()), "importer": "avaf-import", "word_length": word_length}
    if manifest is None:
        config["encoders"] = "unknown: features as found in the folder"
        return {
            "config": config,
            "signature": {"encoders": "unknown", "imported": True},
            "random_weights": [],
        }
    # An avaf export: the numbers are the source store's, so its signature and random-weight record carry over.
    config["encoders"] = "as in source_config (avaf-export manifest)"
    config["source_config"] = manifest.get("config", {})
    return {
        "config": config,
        "signature": manifest.get("signature", {}),
        "random_weights": list(manifest.get("random_weights", [])),
    }


def _question_table(annotations, split: str | None, manifest: dict | None) -> dict[int, dict]:
    """question_id -> video_id, split, text, type, answer and word_length (None when unknown)."""
    lengths = {int(q["question_id"]): int(q["word_length"]) for q in (manifest or {}).get("questions", [])}
    if not annotations:
        return {int(q["question_id"]): dict(q) for q in (manifest or {}).get("questions", [])}
    table: dict[int, dict] = {}
    for q in load_questions(annotations, split):
        table[q.question_id] = {k: getattr(q, k) for k in QUESTION_META}
        table[q.question_id]["word_length"] = lengths.get(q.question_id)
    return table


def _load(npy_dir: Path, folder: str, name: str) -> np.ndarray:
    rel = f"{folder}/{name}.npy"
    if not (npy_dir / rel).is_file():
        raise _Skip(f"missing {'audio' if folder == AUDIO else folder} file {rel}")
    try:
        a = np.load(npy_dir / rel, allow_pickle=False)
    except Exception as e:  # any unreadable file is one skipped item, never fatal
        raise _Skip(f"cannot read {rel}: {e}") from None
    if not np.issubdtype(a.dtype, np.floating):
        raise _Skip(f"{rel} has dtype {a.dtype}, expected floating point")
    h = a.astype(np.float16)
    if not np.isfinite(h).all():
        raise _Skip(f"{rel} has values that are NaN or beyond float16's range (±65504)")
    return h


def _same(dims: dict[str, int], key: str, value: int, what: str) -> None:
    """All items of one store share N and D: the first item imported fixes them."""
    if dims.get(key, value) != value:
        raise _Skip(f"{what} is {value}, earlier imported files have {dims[key]}")


def _read_video(job: _Job, vid: str, entry: dict | None) -> VideoFeatures:
    npy_dir, dims = job.npy_dir, job.dims
    visual = _load(npy_dir, VISUAL, vid)
    audio = _load(npy_dir, AUDIO, vid)
    if visual.ndim != 3:
        raise _Skip(
            f"{VISUAL}/{vid}.npy has shape {visual.shape}, expected (T, N, D) tokens, CLS first"
        )  # not pooled
    t, n, d = visual.shape
    if n < 2 or round((n - 1) ** 0.5) ** 2 != n - 1:
        raise _Skip(f"{VISUAL}/{vid}.npy has {n} tokens per second, expected CLS + a square grid (e.g. 50)")
    _same(dims, "D", d, f"the width of {VISUAL}/{vid}.npy")
    _same(dims, "N", n, f"the token count of {VISUAL}/{vid}.npy")
    if audio.ndim != 2:
        raise _Skip(f"{AUDIO}/{vid}.npy has shape {audio.shape}, expected (T, A) (A = 128 for VGGish)")
    _same(dims, "A", audio.shape[1], f"the width of {AUDIO}/{vid}.npy")
    valid = np.ones(t, bool)
    if audio.shape[0] < t and job.options.pad_short_audio:
        valid[audio.shape[0] :] = False
        audio = np.concatenate([audio, np.zeros((t - audio.shape[0], audio.shape[1]), np.float16)])
    if audio.shape[0] != t or t == 0:
        raise _Skip(f"audio has T = {audio.shape[0]} seconds, visual has T = {t}")
    pooled = visual[:, 0]
    if (npy_dir / POOLED / f"{vid}.npy").is_file():
        pooled = _load(npy_dir, POOLED, vid)
        if pooled.shape != (t, d):
            raise _Skip(f"{POOLED}/{vid}.npy has shape {pooled.shape}, expected {(t, d)}")
    path = npy_dir / VISUAL / f"{vid}.npy"
    v = VideoFeatures(
        vid, str(path), visual, pooled, audio, valid, np.arange(t) + 0.5, decoder=IMPORTED_DECODER
    )
    v.source_size, v.duration, v.has_audio = path.stat().st_size, float(t), bool(valid.any())
    if entry is not None:  # an avaf export: restore what the manifest recorded
        if entry["length"] != t or len(entry["timestamp"]) != t:
            raise _Skip(f"the manifest says T = {entry['length']}, the files have T = {t}")
        for k in RESTORED:
            setattr(v, k, entry[k])
        v.audio_valid, v.timestamp = np.array(entry["audio_valid"], bool), np.array(entry["timestamp"], float)
    dims.update(D=d, N=n, A=audio.shape[1])
    return v


def _video_ids(npy_dir: Path, manifest: dict | None) -> tuple[list[str], list[str]]:
    """(videos to import, unlisted stems): with a manifest, its videos in its order (the source store's) and
    the stems it does not list (stale files of an earlier export); without one, every stem, sorted."""
    found = {p.stem for f in (AUDIO, VISUAL) if (npy_dir / f).is_dir() for p in (npy_dir / f).glob("*.npy")}
    if manifest is None:
        return sorted(found), []
    ids = [v["video_id"] for v in manifest.get("videos", [])]
    return ids, sorted(found - set(ids))


def _import_videos(job: _Job, manifest: dict | None) -> set[str]:
    """Every video of the folder into shards of `videos_per_shard`; returns the ids imported."""
    npy_dir, report, per_shard = job.npy_dir, job.report, job.options.videos_per_shard
    entries = {v["video_id"]: v for v in (manifest or {}).get("videos", [])}
    (ids, unlisted), imported = _video_ids(npy_dir, manifest), set()
    for vid in unlisted:
        report.skipped.append(
            Skipped("video", vid, f"not listed in {MANIFEST} (a file of an earlier export?)")
        )
    for a in range(0, len(ids), per_shard):
        with ShardWriter(new_shard_path(job.folder, "videos"), **job.meta) as w:
            for vid in ids[a : a + per_shard]:
                try:
                    w.add_video(_read_video(job, vid, entries.get(vid)))
                    imported.add(vid)
                except _Skip as e:
                    log.warning("%s: video %s skipped: %s", npy_dir, vid, e)
                    report.skipped.append(Skipped("video", vid, str(e)))
                    w.add_failure(vid, str(npy_dir / VISUAL / f"{vid}.npy"), f"avaf-import: {e}")
    report.videos = len(imported)
    return imported


def _true_length(words: np.ndarray, known: int | None, mode: str, text: str) -> int:
    if known is not None:
        return known
    if mode == "all":
        return len(words)
    if mode == "tokenizer":
        import open_clip  # only this option needs it

        return min(len(words), int(open_clip.tokenize([text])[0].argmax()) + 1)  # end token: the largest id
    rows = np.flatnonzero(np.any(words != 0, axis=1))
    return int(rows[-1]) + 1 if len(rows) else 0


def _read_question(job: _Job, q: dict) -> QuestionFeatures:
    npy_dir, dims, mode = job.npy_dir, job.dims, job.options.word_length
    qid = q["question_id"]
    words, sentence = _load(npy_dir, WORDS, str(qid)), _load(npy_dir, SENTENCE, str(qid))
    words = words[0] if words.ndim == 3 and words.shape[0] == 1 else words  # (1, C, D) -> (C, D)
    sentence = sentence[0] if sentence.ndim == 2 and sentence.shape[0] == 1 else sentence  # (1, D) -> (D,)
    if words.ndim != 2 or sentence.ndim != 1 or words.shape[1] != sentence.shape[0]:
        raise _Skip(f"{WORDS} {words.shape} and {SENTENCE} {sentence.shape}: expected (1, C, D) and (1, D)")
    _same(dims, "D", words.shape[1], f"the width of {WORDS}/{qid}.npy")
    n = _true_length(words, q.get("word_length"), mode, q["text"])
    if not 0 < n <= len(words):
        raise _Skip(f"{WORDS}/{qid}.npy: {n} real word rows out of {len(words)}")
    dims["D"] = words.shape[1]
    meta = {k: q[k] for k in QUESTION_META if k in q}  # a manifest before audio_video_id: its own video
    return QuestionFeatures(**meta, words=words[:n], sentence=sentence)


def _import_questions(job: _Job, table: dict[int, dict], imported: set[str]) -> None:
    """The questions of `table` whose videos were imported, in shards of QUESTIONS_PER_SHARD."""
    npy_dir, report, rows = job.npy_dir, job.report, list(table.values())
    if not rows and (npy_dir / WORDS).is_dir() and any((npy_dir / WORDS).glob("*.npy")):
        reason = f"no --annotations and no {MANIFEST}: nothing gives their text, type, answer and split"
        report.skipped.append(Skipped("question", f"{WORDS}/*.npy", reason))
    for a in range(0, len(rows), QUESTIONS_PER_SHARD):
        with ShardWriter(new_shard_path(job.folder, "questions"), **job.meta) as w:
            for q in rows[a : a + QUESTIONS_PER_SHARD]:
                try:
                    if q["video_id"] not in imported:
                        raise _Skip(f"its video {q['video_id']} is not imported")
                    if q.get("audio_video_id", q["video_id"]) not in imported:
                        raise _Skip(f"the video of its audio, {q['audio_video_id']}, is not imported")
                    w.add_question(_read_question(job, q))
                    report.questions += 1
                except _Skip as e:
                    report.skipped.append(Skipped("question", str(q["question_id"]), str(e)))
    missing = report.count("question")
    if missing:
        log.warning("%s: %d questions skipped (e.g. %s)", npy_dir, missing, report.skipped[-1].reason)
