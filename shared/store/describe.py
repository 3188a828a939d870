"""What a feature file holds, as a dict (for `avaf-inspect --json`) and as text (for people).

Used by `avaf-inspect`; needs only h5py and numpy, like the reader.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from avaf.shared.avqa.question_types import TYPES
from avaf.shared.store import schema
from avaf.shared.store.reader import FeatureStore

MAX_LISTED = 20  # failed videos / missing-video questions listed in full; the rest are counted


def describe_store(path: str | Path) -> dict:
    """Schema, config, counts, shapes and problems of one store or shard."""
    with FeatureStore(path) as fs:
        q = fs.questions()
        known = set(fs.video_ids)
        orphans = sorted({v for v in (*q["video_id"], *q["audio_video_id"]) if v not in known})
        failed = fs.failed()
        videos = fs.videos
        return {
            "file": str(fs.path),
            "bytes": fs.path.stat().st_size,
            "format": schema.FORMAT_NAME,
            "schema_version": fs.schema_version,
            "kind": fs.kind,
            "avaf_version": fs.avaf_version,
            "created": fs.created,
            "random_weights": fs.random_weights,
            "config": fs.config,
            "feature_sets": {s: {n: a.to_json() for n, a in arrays.items()} for s, arrays in fs.sets.items()},
            "counts": {
                "videos": len(fs.video_ids),
                "seconds": int(np.sum(videos["length"])),
                "videos_without_audio": int(np.sum(~videos["has_audio"])),
                "videos_with_missing_audio": int(np.sum(videos["audio_seconds"] < videos["length"])),
                "failed_videos": len(failed),
                "questions": len(q["question_id"]),
                "questions_without_video": int(
                    sum(v not in known or a not in known for v, a in zip(q["video_id"], q["audio_video_id"]))
                ),
                "questions_with_other_audio": int(np.sum(q["audio_video_id"] != q["video_id"])),
            },
            "decoders": dict(Counter(videos["decoder"].tolist())),
            "questions_per_split": dict(Counter(q["split"].tolist())),
            "questions_per_split_and_type": _split_type_counts(q),
            "datasets": {
                t.path(c): {"shape": list(fs.shape(t, c)), "dtype": str(fs.dataset(t, c).dtype)}
                for t in fs.tables.values()
                for c in t.names
                if fs.has(t, c)
            },
            "failed": [{"video_id": v, "source_path": p, "error": e} for v, p, e in failed[:MAX_LISTED]],
            "videos_missing_for_questions": orphans[:MAX_LISTED],
        }


ROWS = {"seconds": "per second", "questions": "per question", "words": "per word"}


def _array_line(set_name: str, name: str, a: dict) -> str:
    """One array of a feature set: role, rows, shape of a row, encoder, weights checksum."""
    shape = ("L", *a["shape"]) if a["table"] == "words" else tuple(a["shape"])
    shape_text = "(" + ", ".join(str(x) for x in shape) + ("," if len(shape) == 1 else "") + ")"
    e = a["encoder"]
    encoder = f"{e['model']} ({e['pretrained']})" if e["model"] else "encoder unknown"
    sha = f" sha256 {e['weights_sha256'][:12]}" if e["weights_sha256"] else ""
    random = "  RANDOM WEIGHTS" if e["random"] else ""
    return f"    {set_name + '/' + name:<22} {a['role']:<6} {ROWS[a['table']]:<12} {shape_text:<14} {encoder}{sha}{random}"


def _split_type_counts(q: dict) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split, qtype in zip(q["split"].tolist(), q["type"].tolist()):
        row = out.setdefault(split, {})
        row[qtype] = row.get(qtype, 0) + 1
    order = {t: i for i, t in enumerate(TYPES)}  # the paper's column order; unknown types last
    return {
        s: dict(sorted(r.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
        for s, r in sorted(out.items())
    }


def format_description(d: dict) -> str:
    """The dict of describe_store as a short report for a terminal."""
    c = d["counts"]
    lines = [
        f"{d['file']}  ({d['bytes'] / 1e6:.1f} MB)",
        f"  format {d['format']} schema v{d['schema_version']} ({d['kind']}), written by avaf "
        f"{d['avaf_version']} at {d['created']}",
    ]
    if d["random_weights"]:
        lines.append(
            f"  !!! RANDOM WEIGHTS: {', '.join(d['random_weights'])} ran on random initialisation. "
            "These features are for tests only; do not train or report on them. !!!"
        )
    lines.append(
        f"  videos {c['videos']} ({c['seconds']} seconds; {c['videos_without_audio']} without audio, "
        f"{c['videos_with_missing_audio']} with zero-filled seconds), failed {c['failed_videos']}"
    )
    if d["decoders"]:
        lines.append("  decoders " + ", ".join(f"{k or '?'}: {n}" for k, n in sorted(d["decoders"].items())))
    lines.append(
        f"  questions {c['questions']} ({c['questions_without_video']} whose video is not in the store, "
        f"{c['questions_with_other_audio']} with another video's audio)"
    )
    for split, types in d["questions_per_split_and_type"].items():
        lines.append(f"    {split}: {sum(types.values())}")
        lines += [f"      {t:<28} {n:>7}" for t, n in types.items()]
    lines.append("  config")
    lines += [f"    {k}: {v}" for k, v in sorted(d["config"].items())]
    lines.append(f"  feature sets: {', '.join(sorted(d['feature_sets'])) or 'none'}")
    lines += [
        _array_line(s, n, a) for s, arrays in sorted(d["feature_sets"].items()) for n, a in arrays.items()
    ]
    lines.append("  datasets")
    lines += [f"    {p:<26} {str(tuple(s['shape'])):<20} {s['dtype']}" for p, s in d["datasets"].items()]
    if d["failed"]:
        lines.append("  failed videos")
        lines += [f"    {f['video_id']} ({f['source_path']}): {f['error']}" for f in d["failed"]]
        if c["failed_videos"] > len(d["failed"]):
            lines.append(
                f"    ... and {c['failed_videos'] - len(d['failed'])} more (--json lists the first {MAX_LISTED})"
            )
    if d["videos_missing_for_questions"]:
        lines.append("  videos asked about but missing: " + ", ".join(d["videos_missing_for_questions"]))
    return "\n".join(lines)
