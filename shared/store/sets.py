"""The avaf feature set described: its five arrays, their encoders and preprocessing (docs/schema.md).

A schema-1 file has no `feature_sets` attribute: it holds the avaf set, which its signature describes (the
CLIP and VGGish configs that avaf-extract records). `avaf_set(signature)` turns such a signature into the
set's `FeatureArray`s; avaf-extract records the same for the files it writes now (encoders/stage.py), so a
file reads alike whichever version wrote it. What a set may be (`check_sets`) and how a file records its sets
(`sets_to_json`, the root attribute `feature_sets`). h5py-free, numpy-free: plain dicts in, dataclasses out.

The tspm pack's set (`TSPM`): its array names, tables and real shapes (`TSPM_ARRAYS`), the one table that
avaf-extract and the exporters of shared/exchange/ both use; `tspm_array(name, encoder, preprocessing)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from avaf.shared.store import schema
from avaf.shared.store.schema import AVAF, Encoder, FeatureArray

FRAME = "1 fps: the frame nearest t + 0.5 s"
AUDIO_EXAMPLE = "the 0.96 s example starting at second t; zeros where the audio is missing (audio_valid)"
TEXT = "question with its placeholders filled, the final question mark dropped (docs/schema.md)"


def avaf_set(signature: dict) -> dict[str, FeatureArray]:
    """The avaf set's arrays as a signature of avaf-extract describes them (its "clip" and "vggish"
    entries); a signature without them (a test's, an import's) gives arrays of unknown encoder."""
    clip = _entry(signature, "clip")
    audio = _entry(signature, "vggish")
    image = _known(
        frame=FRAME,
        resize="shorter side to image_size, bicubic; centre crop image_size x image_size" if clip else None,
        image_size=clip.get("image_size", signature.get("image_size")),
        mean=clip.get("mean"),
        std=clip.get("std"),
        quick_gelu=clip.get("quick_gelu"),
        precision=clip.get("precision"),
    )
    sound = _known(
        example=AUDIO_EXAMPLE,
        sample_rate=audio.get("sample_rate", signature.get("sample_rate")),
        log_mel=audio.get("log_mel"),
        embedding=audio.get("embedding"),
        precision=audio.get("precision"),
    )
    text = _known(
        text=TEXT,
        tokenizer="open_clip BPE" if clip else None,
        context_length=clip.get("context_length"),
        precision=clip.get("precision"),
    )
    encoders = {"visual": _encoder(clip, signature, "clip"), "audio": _encoder(audio, signature, "vggish")}
    encoders["text"] = encoders["visual"]
    preprocessing = {"visual": image, "audio": sound, "text": text}
    roles = {"visual_tokens": "visual", "visual_pooled": "visual", "audio": "audio"}
    out = {}
    for name, (table, column) in schema.AVAF_COLUMNS.items():
        role = roles.get(name, "text")
        doc = schema.TABLE_BY_GROUP[table].column(column).doc
        out[name] = FeatureArray(AVAF, name, table, role, encoders[role], preprocessing[role], (), doc)
    return out


def check_sets(sets: schema.Sets) -> None:
    """A ValueError naming the first bad set or array: names ([a-z][a-z0-9_]*, no set named like a column),
    tables, roles, and the avaf set's arrays being those schema 1 has."""
    for s, arrays in sets.items():
        if not schema.NAME.match(s) or s in schema.RESERVED:
            raise ValueError(f"feature set name {s!r}: use [a-z][a-z0-9_]*, not a column name")
        for name, a in arrays.items():
            where = f"feature array {s}/{name}"
            if (a.set, a.name) != (s, name) or not schema.NAME.match(name):
                raise ValueError(f"{where}: named {a.set}/{a.name}; names are [a-z][a-z0-9_]*")
            if a.table not in schema.FEATURE_TABLES or a.role not in schema.ROLES:
                raise ValueError(
                    f"{where}: table {a.table!r} / role {a.role!r}: use {schema.FEATURE_TABLES} / {schema.ROLES}"
                )
            if s == schema.AVAF and schema.AVAF_COLUMNS.get(name, ("",))[0] != a.table:
                raise ValueError(
                    f"{where}: the avaf set's arrays are {sorted(schema.AVAF_COLUMNS)}, in their tables"
                )


def sets_to_json(sets: schema.Sets) -> str:
    """The `feature_sets` root attribute."""
    return json.dumps(
        {s: {n: a.to_json() for n, a in arrays.items()} for s, arrays in sets.items()}, sort_keys=True
    )


def sets_from_json(text: str) -> schema.Sets:
    return {
        s: {n: schema.FeatureArray.from_json(s, n, d) for n, d in arrays.items()}
        for s, arrays in json.loads(text).items()
    }


def structure(sets: schema.Sets) -> dict[str, dict[str, tuple[str, str]]]:
    """What files must agree on to be merged: the sets, their arrays, each array's table and role."""
    return {
        s: {n: (a.table, a.role) for n, a in sorted(arrays.items())} for s, arrays in sorted(sets.items())
    }


def _entry(signature: dict, key: str) -> dict:
    value = signature.get(key)
    return value if isinstance(value, dict) else {}


def _known(**items) -> dict:
    return {k: v for k, v in items.items() if v is not None}


def _encoder(config: dict, signature: dict, key: str) -> Encoder:
    """An encoder from its config in the signature: open_clip's (model_name, pretrained) or VGGish's
    (name, weights); the checksum as the signature records it."""
    if not config:
        return Encoder()
    return Encoder(
        model=str(config.get("model_name") or config.get("name", "")),
        pretrained=str(config.get("pretrained") or config.get("weights", "")),
        weights_sha256=str(signature.get(f"{key}_sha256") or config.get("weights_sha256", "")),
        random=bool(config.get("random", False)),
        library={"open_clip": "open_clip", "vggish": "avaf"}.get(str(config.get("name")), ""),
    )


# -- the tspm pack's set (DESIGN.md §3b, docs/feature-packs.md) ---------------------------------------------------------
# The one place its array names live: avaf-extract --features tspm writes them, the exporters for TSPM,
# QA-TIGER, AV-Master and STG (shared/exchange/layouts.py) read them.

TSPM = "tspm"


@dataclass(frozen=True)
class PackArray:
    """One array a pack writes: its table, role, row shape (at the real encoders' sizes) and what it holds."""

    table: str
    role: str
    shape: tuple[int, ...]
    doc: str


TSPM_ARRAYS: dict[str, PackArray] = {
    "audio": PackArray("seconds", "audio", (128,), "VGGish embedding after the last ReLU, no PCA"),
    "frame": PackArray(
        "seconds", "visual", (768,), "OpenAI CLIP ViT-L/14@336 image embedding (pooled, projected)"
    ),
    "tome": PackArray(
        "seconds",
        "visual",
        (14, 1024),
        "ToMe-14 tokens of timm vit_large_patch16_384 (r = 25 in 23 blocks), final norm, class token first",
    ),
    "sentence": PackArray(
        "questions", "text", (768,), "CLIP ViT-L/14@336 text tower: the end token's output, projected"
    ),
    "words": PackArray(
        "questions",
        "text",
        (77, 768),
        "CLIP ViT-L/14@336 text tower: all 77 positions after ln_final, times text_projection",
    ),
    "prompt": PackArray(
        "questions",
        "text",
        (768,),
        "the QA-prompt sentence (--qa-prompts table) as `sentence`; NaN where the table lacks the template",
    ),
}
TSPM_OPTIONAL = ("prompt",)  # only with --qa-prompts


def tspm_array(
    name: str, encoder: Encoder | None = None, preprocessing: dict | None = None, shape=None
) -> FeatureArray:
    """The `FeatureArray` of the tspm set's array `name` (shape: the real one unless given, e.g. by a test's
    tiny stand-in)."""
    a = TSPM_ARRAYS[name]
    shape = a.shape if shape is None else tuple(shape)
    return FeatureArray(TSPM, name, a.table, a.role, encoder or Encoder(), preprocessing or {}, shape, a.doc)


def tspm_question_text(text: str) -> str:
    """The string the tspm set's question arrays encode, from a question's stored text (placeholders filled,
    final mark dropped): TSPM's question convention, a final '?'. The exporters tokenize the same string
    (STG's word mask), so extraction and export agree on it here."""
    return text + "?"
