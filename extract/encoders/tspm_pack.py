"""The tspm pack's set (DESIGN.md §3b; extract/packs.py): its arrays from the encoders' outputs, what it
records of them, and its question features.

Per second: VGGish `audio` [T, 128] (the avaf pack's encoder, run once for both), `frame` [T, 768] (OpenAI
CLIP ViT-L/14@336's pooled, projected image embedding, QuickGELU, from the 336-px view) and `tome` [T, 14,
1024] (ToMe-14 tokens from the 438 -> 384 view, fp32 always). Per question, through the same CLIP's text
tower, on the question as TSPM encodes it (avaf's text and a final "?"): `sentence` [768] (the end token,
projected) and `words` [77, 768] (every position times text_projection); with a QA-prompt table, `prompt`
[768]: the sentence of the table's declarative prompt, None (a NaN row) where the table lacks the template.
Array names, tables and docs: `shared/store/sets.py` (TSPM_ARRAYS), shared with the exporters.
"""

from __future__ import annotations

import numpy as np

from avaf.extract.decode.views import View
from avaf.shared.store.schema import FPS, SAMPLE_RATE, Encoder, FeatureArray
from avaf.shared.store.sets import AUDIO_EXAMPLE, FRAME, TSPM_ARRAYS, tspm_array, tspm_question_text

QUESTION_TEXT = "question with its placeholders filled, single spaces, and a final '?' (as TSPM encodes it)"
TOME_PRECISION = "fp32 always: fp16 changes which tokens merge"


def video_arrays(out: dict, i: int) -> dict[str, np.ndarray]:
    """Video i's tspm arrays from the encoders' per-video outputs (stage.encode_videos)."""
    return {"audio": out["vggish"][i], "frame": out["tspm_clip"][i], "tome": out["tome"][i]}


def encode_questions(
    clip, texts: list[str], prompts: list[str | None] | None = None
) -> list[dict[str, np.ndarray | None]]:
    """{sentence (D,), words (C, D)} float16 per question, and with `prompts` (a table was given) `prompt`
    (D,): None where the table lacks the question's template (prompts[i] None). Passes of a fixed shape
    (ClipEncoder.encode_text_padded): the same bits whoever encodes a question, with whichever others."""
    words, sentence = clip.encode_text_padded([tspm_question_text(t) for t in texts])
    given = [p for p in prompts or [] if p is not None]
    encoded = iter(clip.encode_text_padded(given)[1] if given else [])
    out = []
    for i in range(len(texts)):
        row = {"sentence": _f16(sentence[i]), "words": _f16(words[i])}
        if prompts is not None:
            row["prompt"] = _f16(next(encoded)) if prompts[i] is not None else None
        out.append(row)
    return out


def _f16(x) -> np.ndarray:
    return np.asarray(x.float().cpu(), dtype=np.float16)


def signature(models: dict, tome_view: View, prompt_table: dict | None) -> dict:
    """The tspm set's part of a run's signature: every encoder's config and checksum, the pass sizes, the
    text convention and the prompt table (None: no prompt array)."""
    clip, vggish, tome = models["tspm_clip"], models["vggish"], models["tome"]
    return {
        "fps": FPS,
        "sample_rate": SAMPLE_RATE,
        "vggish": vggish.config_dict(),
        "clip": clip.config_dict(),
        "tome": tome.config_dict() | {"view": [tome_view.size, tome_view.resize]},
        "pass_size": {
            "vggish_examples": vggish.batch_size,
            "clip_frames": clip.batch_size,
            "tome_frames": tome.batch_size,
        },
        "question_text": QUESTION_TEXT,
        "qa_prompts": prompt_table,
    }


def feature_set(models: dict, views: dict[str, View], prompt_table: dict | None) -> dict[str, FeatureArray]:
    """The tspm set's arrays, each with its encoder, preprocessing and row shape; `prompt` only with a table."""
    clip, vggish, tome = models["tspm_clip"], models["vggish"], models["tome"]
    text = {
        "text": QUESTION_TEXT,
        "tokenizer": "open_clip BPE",
        "context_length": clip.config_dict()["context_length"],
        "precision": clip.precision,
        "qa_prompts": prompt_table or "none given: no prompt array",
    }
    prep = {
        "audio": {
            "example": AUDIO_EXAMPLE,
            "sample_rate": SAMPLE_RATE,
            "log_mel": vggish.config_dict()["log_mel"],
        }
        | {"embedding": vggish.config_dict()["embedding"], "precision": vggish.precision},
        "frame": {"frame": FRAME, "view": views["tspm_clip"].describe(), "mean": list(clip.mean)}
        | {"std": list(clip.std), "quick_gelu": clip.quick_gelu, "precision": clip.precision},
        "tome": {
            "frame": FRAME,
            "view": views["tome"].describe(),
            "mean": list(tome.mean),
            "std": list(tome.std),
        }
        | {"r": list(tome.r), "precision": TOME_PRECISION},
        "sentence": text,
        "words": text,
        "prompt": text | {"text": "the table's declarative prompt of the question's template, filled"},
    }
    enc = {
        "audio": Encoder("vggish", vggish.weights, vggish.weights_sha256, vggish.random, "avaf"),
        "tome": Encoder(tome.model_name, tome.pretrained, tome.weights_sha256, tome.random, "timm"),
    }
    clip_enc = Encoder(clip.model_name, clip.pretrained, clip.weights_sha256, clip.random, "open_clip")
    context = int(text["context_length"])
    shapes = {
        "audio": TSPM_ARRAYS["audio"].shape,
        "frame": (clip.width,),
        "tome": (tome.num_tokens, tome.width),
        "sentence": (clip.width,),
        "words": (context, clip.width),
        "prompt": (clip.width,),
    }
    names = [n for n in TSPM_ARRAYS if n != "prompt" or prompt_table is not None]
    return {n: tspm_array(n, enc.get(n, clip_enc), prep[n], shapes[n]) for n in names}
