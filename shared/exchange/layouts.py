"""The feature layouts that TSPM, QA-TIGER, AV-Master and STG read, as data (docs/feature-packs.md).

Each `Layout` says which folder of per-id `.npy` files (or, for STG, which HDF5 file of per-id datasets) holds
which array of the store's `tspm` set (`sets.TSPM_ARRAYS`), in which form (a leading axis of 1, the first n
word positions), the dtype its loader needs, and what differs from the features its authors used. The facts
come from reading each repository's loader and config at the commit named (they have no license: nothing
of theirs is copied here). `packs_export.export_pack` writes a layout; `layout_bytes` gives its disk.

    LAYOUTS["tspm"].targets[0]  # Target("vggish", "audio"): vggish/<video_id>.npy, (T, 128) float32
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from avaf.shared.store.schema import AVAF, Sets
from avaf.shared.store.sets import TSPM, TSPM_ARRAYS, TSPM_OPTIONAL

# Where each array the layouts need is read from, in order of preference: VGGish is one encoder whichever
# set recorded it (a store extracted with --features avaf,tspm may hold it in either).
SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    name: ((TSPM, name), (AVAF, "audio")) if name == "audio" else ((TSPM, name),) for name in TSPM_ARRAYS
}


@dataclass(frozen=True)
class Target:
    """One folder of `<id>.npy` files, or one HDF5 file of datasets named by id (STG), relative to --out."""

    path: str
    array: str  # a name of sets.TSPM_ARRAYS
    lead: bool = False  # a leading axis of 1: (1, 768), (1, 77, 768), as the loaders' files have it
    positions: int | None = None  # a per-question word array: its first n positions only

    @property
    def per(self) -> str:
        return "video" if TSPM_ARRAYS[self.array].table == "seconds" else "question"

    def row_shape(self, stored: tuple[int, ...]) -> tuple[int, ...]:
        """The shape written for one video second or one question, from the shape stored."""
        shape = (min(self.positions, stored[0]), *stored[1:]) if self.positions else tuple(stored)
        return (1, *shape) if self.lead else shape


@dataclass(frozen=True)
class Layout:
    """One consumer repository's feature layout: its targets, their dtype and container, and what to say."""

    name: str
    repo: str  # owner/name@commit whose loader was read
    targets: tuple[Target, ...]
    dtype: str = "float32"
    container: str = "npy"  # or "hdf5"
    differs: tuple[str, ...] = ()  # how the export differs from the authors' features: always said
    notes: tuple[str, ...] = ()  # what else the user must know to run the loader on it
    usage: str = ""  # how to point the repository at the export ({out}: the folder)

    def required(self) -> tuple[str, ...]:
        return tuple(t.array for t in self.targets if t.array not in TSPM_OPTIONAL)


LAYOUTS: dict[str, Layout] = {
    "qa-tiger": Layout(
        "qa-tiger",
        "AIM-SKKU/QA-TIGER@f40bd027",
        (
            Target("feats/vggish", "audio"),
            Target("feats/frame_ViT-L14@336px", "frame"),
            Target("feats/visual_tome14", "tome"),
        ),
        notes=(
            "no question files: configs/qa-tiger/vitl14.py (quest_feat=None) encodes each question online "
            "with the model's own frozen CLIP ViT-L/14@336px text tower",
        ),
        usage="its config reads ./feats/... under root='./data': export with --out <QA-TIGER>/data",
    ),
    "tspm": Layout(
        "tspm",
        "GeWu-Lab/TSPM@0106ce41",
        (
            Target("vggish", "audio"),
            Target("clip_feats/frame_1fps_ViT-L14@336px", "frame"),
            Target("ToMe_feat/tome14", "tome"),
            Target("clip_feats/qst_ViT-L14@336px", "sentence", lead=True),
            Target("clip_feats/qaPrompt_ViT-L14@336px", "prompt", lead=True),
        ),
        notes=(
            "TSPM's loader also opens ToMe_feat/audio_tome14/<video_id>.npy, which its model never reads: "
            "pass --audios_patch_dir {out}/vggish (nothing is written there)",
        ),
        usage="set server_path in configs/arguments.py to {out}/ (its defaults are server_path + these "
        "folders), and pass --audios_patch_dir {out}/vggish",
    ),
    "av-master": Layout(
        "av-master",
        "AoKoo233/AV-Master@86b75034",
        (
            Target("vggish_audio", "audio"),
            Target("clip_vit_l14_336px", "frame"),
            Target("clip_sentence_l14_336px", "sentence", lead=True),
            Target("clip_word_l14_336px", "words", lead=True),
        ),
        notes=(
            "no clip_patch_vit_l14_336px/: AV-Master parses --clip_patch_dir but never opens it (its patch "
            "input is the frame file, read a second time)",
        ),
        usage="pass --audios_feat_dir {out}/vggish_audio --clip_vit_b32_dir {out}/clip_vit_l14_336px "
        "--clip_qst_dir {out}/clip_sentence_l14_336px --clip_word_dir {out}/clip_word_l14_336px",
    ),
    "stg": Layout(
        "stg",
        "zyXiest/STG-master@31cfaefc",
        (
            Target("vggish.h5", "audio"),
            Target("frame_feat.h5", "frame"),
            Target("tomebl14.h5", "tome"),
            Target("clip_question_L14.h5", "sentence", lead=True),
            Target("clip_word_vit_L14.h5", "words", lead=True, positions=20),
        ),
        dtype="float16",
        container="hdf5",
        differs=(
            "tomebl14.h5 holds ToMe-14 tokens (TSPM's protocol); STG's authors used 49 (r = 24 in 22 blocks, "
            "a 7 x 7 grid in its graph layer, square 384 resize, ImageNet mean/std): its model runs on 14 "
            "(two rows of 7), but its published numbers were made on 49",
            "clip_word_vit_L14.h5 qst_feat holds positions 0-19 of CLIP's text output after ln_final and "
            "text_projection (the tspm set's words, of the question with TSPM's final '?'); STG's own are the "
            "transformer's states before ln_final, unprojected, of the question without '?', which avaf does "
            "not extract",
        ),
        usage="set DATA_path in configs/stg/parameters.py to {out}/",
    ),
}


def source(sets: Sets, array: str) -> tuple[str, str] | None:
    """The (set, name) that a store holding `sets` gives `array` from, or None."""
    for s, name in SOURCES[array]:
        if name in sets.get(s, {}):
            return s, name
    return None


def npy_header_bytes(shape: tuple[int, ...], dtype: str) -> int:
    """Bytes of the header numpy writes before an array of this shape and dtype (128 for small shapes)."""
    buf = io.BytesIO()
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return len(buf.getvalue())


def layout_bytes(name: str, videos: int, seconds: int, questions: int) -> dict[str, int]:
    """Bytes each target of layout `name` takes for `videos` of `seconds` each and `questions`, computed from
    the real shapes and the layout's dtype: the arrays and .npy headers (HDF5's own per-dataset overhead and
    the file system's block rounding are not counted)."""
    layout = LAYOUTS[name]
    itemsize = np.dtype(layout.dtype).itemsize
    out = {}
    for t in layout.targets:
        row = t.row_shape(TSPM_ARRAYS[t.array].shape)
        shape, count = ((seconds, *row), videos) if t.per == "video" else (row, questions)
        size = int(np.prod(shape)) * itemsize
        if layout.container == "npy":
            size += npy_header_bytes(shape, layout.dtype)
        out[t.path] = size * count
    return out
