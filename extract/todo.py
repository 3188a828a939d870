"""What a run has to do (extract/pipeline.py): videos and questions not yet done for every pack asked for,
and what a store that gains a pack keeps (docs/extraction.md, "Feature packs").

Every complete shard holds some feature sets for its videos and questions; a video's latest shard is the one
the store reads (merge.py). A video whose latest shard holds every pack asked for is done; one whose shard
lacks some is decoded again once and encoded for the missing packs only, its other arrays copied from that
shard byte for byte (`Kept`), never recomputed; its new shard then holds every set. A shard lacking a set
("outgrown") is removed once all it held is in later complete shards (`remove_outgrown`), so the store is
rebuilt from shards that all hold the same sets. A pack in the store but not asked for is refused up front.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from avaf.extract.packs import signature_of_set
from avaf.shared.avqa.annotations import Question
from avaf.shared.store import schema
from avaf.shared.store.merge import signature_difference
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.schema import AVAF
from avaf.shared.store.sets import TSPM
from avaf.shared.store.writer import QuestionFeatures, VideoFeatures, complete_shards

log = logging.getLogger(__name__)

# What makes a stored question the same as a parsed one (its features depend only on the text).
KEY = ("question_id", "text", "split", "type", "answer", "audio_video_id")


@dataclass(frozen=True)
class VideoJob:
    """A video to decode and encode for `packs`; `kept`: the shard whose other sets it keeps ("": none)."""

    video_id: str
    path: str
    packs: tuple[str, ...]
    kept: str = ""


@dataclass(frozen=True)
class QuestionJob:
    """A question to encode for `packs`; `kept` as for a video."""

    question: Question
    packs: tuple[str, ...]
    kept: str = ""


@dataclass
class ShardIndex:
    """What the complete shards of a folder hold: each shard's sets and signature, each ok video's and each
    question's latest shard (a question with its stored KEY columns)."""

    sets: dict[Path, frozenset[str]] = field(default_factory=dict)
    signature: dict[Path, dict] = field(default_factory=dict)
    config: dict[Path, dict] = field(default_factory=dict)  # the config of the run that wrote each shard
    video: dict[str, Path] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)  # ok video -> its stored source path
    question: dict[int, tuple[Path, dict]] = field(default_factory=dict)
    records: dict[Path, tuple[set[str], set[int]]] = field(default_factory=dict)  # ok videos, questions


def index_shards(folder: Path) -> ShardIndex:
    index = ShardIndex()
    for p in complete_shards(folder):
        with FeatureStore(p) as s:
            index.sets[p], index.signature[p], index.config[p] = frozenset(s.sets), s.signature, s.config
            q = s.questions()
            qids = [int(i) for i in q["question_id"]]
            index.records[p] = (set(s.video_ids), set(qids))
            index.video.update(dict.fromkeys(s.video_ids, p))
            index.source.update(zip(s.video_ids, s.videos["source_path"]))
            for i, qid in enumerate(qids):
                index.question[qid] = (p, {k: _plain(q[k][i]) for k in (*KEY, "video_id")})
    return index


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def check_sets(index: ShardIndex, packs: tuple[str, ...], out: str) -> None:
    """ValueError (one line) when the store holds a set that `packs` lacks: its videos would go without it."""
    held = sorted(set().union(*index.sets.values()) - set(packs)) if index.sets else []
    if held:
        have = ",".join(sorted(set().union(*index.sets.values())))
        raise ValueError(
            f"{out} holds the feature set {', '.join(held)}, which --features {','.join(packs)} leaves out: "
            f"pass --features {have} (every video of a store has every set), or another --out"
        )


def plan_videos(
    media: list[tuple[str, str]], packs: tuple[str, ...], index: ShardIndex
) -> tuple[list[VideoJob], int]:
    """(jobs, how many are done): new videos for every pack; videos whose latest shard lacks a pack for the
    missing ones (every such video, listed or not: its old shard can only go once all of it moved)."""
    jobs, done, paths = [], 0, dict(media)
    for vid, path in media:
        shard = index.video.get(vid)
        if shard is None:
            jobs.append(VideoJob(vid, path, packs))
        elif set(packs) <= index.sets[shard]:
            done += 1
    for vid, shard in index.video.items():
        missing = tuple(p for p in packs if p not in index.sets[shard])
        if missing:
            jobs.append(VideoJob(vid, paths.get(vid, index.source[vid]), missing, str(shard)))
    return jobs, done


def plan_questions(
    questions: list[Question], packs: tuple[str, ...], index: ShardIndex, need_template: bool
) -> list[QuestionJob]:
    """New or changed questions for every pack; stored ones whose shard lacks a pack for the missing ones
    (their parsed rows when this run reads them; `need_template`: a prompt table needs those rows)."""
    parsed = {q.question_id: q for q in questions}
    stored = {qid: {k: cols[k] for k in KEY} for qid, (_, cols) in index.question.items()}
    jobs = [
        QuestionJob(q, packs)
        for q in questions
        if stored.get(q.question_id) != {k: getattr(q, k) for k in KEY}
    ]
    new = {j.question.question_id for j in jobs}
    without = 0
    for qid, (shard, key) in index.question.items():
        missing = tuple(p for p in packs if p not in index.sets[shard])
        if not missing or qid in new:
            continue
        q = parsed.get(qid) or Question(template="", templ_values=(), **key)
        without += q.question_id not in parsed
        jobs.append(QuestionJob(q, missing, str(shard)))
    if need_template and without:
        raise ValueError(
            f"{without} stored questions gain the tspm set, whose QA prompts need their templates: pass the "
            "annotation files they came from with --annotations"
        )
    log.info("%d questions to encode (%d for the packs they lack)", len(jobs), len(jobs) - len(new))
    return jobs


# Settings that set the bits of the features (each pass's shape), read from the config of the run that wrote a
# shard: a changed one is caught before any encoder loads. (flag, config section, field, the feature set it
# concerns: None for every shard) The rest (weights, models, the precision `auto` resolves to) is in the
# encoders' signature: check_signature.
BIT_SETTINGS = (
    ("--batch-size", "runtime", "batch_size", None),
    ("--tspm-clip-batch-size", "tspm", "clip_batch_size", TSPM),
    ("--tome-batch-size", "tspm", "tome_batch_size", TSPM),
)


def check_settings(index: ShardIndex, config: dict, folder: Path) -> None:
    """ValueError (one line) when this run sets a bit-setting value other than the one the stored shards
    were made with: naming the setting, both values and the two ways out. Before any work or encoder."""
    for flag, section, name, feature_set in BIT_SETTINGS:
        ours = config.get(section, {}).get(name)
        for shard, theirs in index.config.items():
            stored = theirs.get(section, {}).get(name, ours)  # older shards without the field: not known
            if stored != ours and (feature_set is None or feature_set in index.sets[shard]):
                raise ValueError(
                    f"{folder}: its shards were made with {flag} {stored}, this run asks for {ours}, and the "
                    f"features would not be the same bits: pass {flag} {stored} to continue them, or choose "
                    "a new --out"
                )


def check_signature(index: ShardIndex, signature: dict, folder: Path) -> None:
    """ValueError (one line) when a stored shard's sets were made with other encoders or settings than this
    run's (weights, models, a precision that `auto` resolved otherwise): before any video is decoded."""
    signature = json.loads(json.dumps(signature))  # as stored: lists, not tuples
    for shard in sorted(index.signature):
        for s in sorted(index.sets[shard]):
            ours, theirs = signature_of_set(signature, s), signature_of_set(index.signature[shard], s)
            if ours != theirs:
                diff = signature_difference(theirs, ours)
                raise ValueError(
                    f"{shard}: its {s} set was made with other encoders or settings than this run's ({diff}; "
                    f"stored vs now): pass the settings it was made with to continue {folder}, or choose a "
                    "new --out"
                )


def outgrown(index: ShardIndex, packs: tuple[str, ...]) -> list[Path]:
    """The complete shards lacking a pack asked for."""
    return [p for p, sets in index.sets.items() if not set(packs) <= sets]


def remove_outgrown(folder: Path, shards: list[Path]) -> list[Path]:
    """Remove each of `shards` whose every ok video has a later record (ok or failed) and every question a
    later row in complete shards; the ones left (a job lost midway) stay for the next run."""
    later: dict[Path, tuple[set[str], set[int]]] = {}
    names = complete_shards(folder)
    for p in names:
        with FeatureStore(p) as s:
            later[p] = (set(s.runs()["video_id"]), {int(q) for q in s.questions()["question_id"]})
    removed = []
    for shard in shards:
        after = [p for p in names if p.name > shard.name]
        with FeatureStore(shard) as s:
            videos, qids = set(s.video_ids), {int(q) for q in s.questions()["question_id"]}
        videos -= set().union(*(later[p][0] for p in after)) if after else set()
        qids -= set().union(*(later[p][1] for p in after)) if after else set()
        if not videos and not qids:
            log.info("removing %s: everything it held is in later shards with every set", shard)
            shard.unlink()
            removed.append(shard)
    return removed


class Kept:
    """Reads what kept shards hold, to complete a job's new arrays with the stored ones (bytes unchanged)."""

    def __init__(self) -> None:
        self._open: dict[str, FeatureStore] = {}
        self._rows: dict[str, dict[int, int]] = {}  # shard -> question id -> its row there

    def _store(self, path: str) -> FeatureStore:
        if path not in self._open:
            self._open[path] = fs = FeatureStore(path)
            self._rows[path] = {int(q): i for i, q in enumerate(fs.questions()["question_id"])}
        return self._open[path]

    def video(self, job: VideoJob, new: VideoFeatures) -> VideoFeatures | str:
        """`new` with the stored sets of the video added; an error string when the decode now gives another
        timeline than the stored one (the video then fails, and the next run extracts it anew)."""
        fs = self._store(job.kept)
        stored = fs.video(job.video_id, fields=("timestamp",))
        if not np.array_equal(stored["timestamp"], new.timestamp):
            return (
                f"decoded again to {new.length} seconds at other times than the {stored['length']} stored in "
                f"{job.kept}: its stored features are dropped and the next run extracts it anew"
            )
        out = replace(new, sets=dict(new.sets))
        for s, arrays in fs.sets.items():
            for name, a in arrays.items():
                if a.table == "seconds":
                    _put(out, s, name, fs.video_array(job.video_id, s, name))
        return out

    def question(self, job: QuestionJob, new: QuestionFeatures) -> QuestionFeatures:
        """`new` with the stored sets of the question added."""
        fs = self._store(job.kept)
        q, row = fs.questions(), self._rows[job.kept][job.question.question_id]
        span = (q["word_offset"][row : row + 1], q["word_length"][row : row + 1])
        out = replace(new, sets=dict(new.sets))
        for s, arrays in fs.sets.items():
            for name, a in arrays.items():
                if a.table == "words":
                    _put(out, s, name, fs.load_words(*span, column=a.key)[0])
                elif a.table == "questions":
                    _put(out, s, name, fs.dataset(schema.QUESTIONS, a.key)[row])
        return out

    def close(self) -> None:
        for fs in self._open.values():
            fs.close()
        self._open.clear()


def _put(item, set_name: str, name: str, value: np.ndarray) -> None:
    if set_name == AVAF:
        setattr(item, name, value)
    else:
        item.sets.setdefault(set_name, {})[name] = value
