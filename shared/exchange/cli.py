"""`avaf-export` and `avaf-import`: feats.h5 <-> the per-file .npy folders of the AVQA repositories (issue 7).

    avaf-export --feats feats.h5 --format npy --out npy/
    avaf-import --npy npy/ --out feats.h5 --annotations json_update/

The work is in `avaf.shared.exchange.npy_folders` (`export_npy`, `import_npy`); these commands parse, call and print.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import click

from avaf.shared.cli import CONTEXT, Command, common_options, config_options, from_flags, option
from avaf.shared.exchange.npy_folders import (
    CONTEXT_LENGTH,
    DTYPES,
    LAYOUTS,
    WORD_LENGTHS,
    export_npy,
    import_npy,
)


@dataclass(frozen=True)
class ExportConfig:
    """`avaf-export`: which store, where, and in which layout."""

    feats: str = option(
        None, "The avaf feature store to export.", required=True, path={"exists": True, "dir_okay": False}
    )
    format: str = option(
        "npy",
        "Output format: one .npy file per video and per question (the AVQA repositories' layout).",
        choices=("npy",),
    )
    out: str = option(
        None,
        "Folder to write (created if needed). One that already holds an export (or any of its folders) is "
        "refused unless --overwrite.",
        required=True,
        path={"file_okay": False},
    )
    dtype: str = option(
        "float32",
        "Array dtype. The repositories write float32; float16 halves the disk and is what the store holds. "
        "Either way float16 -> file -> float16 is exact.",
        choices=DTYPES,
    )
    layout: str = option(
        "repos",
        "repos: clip_word (1, 77, D) with zero rows after the L real tokens and clip_qst (1, D), as PSTP-Net "
        "and AVAF-Net load them; exact: clip_word (L, D) and clip_qst (D,).",
        choices=LAYOUTS,
    )
    context_length: int = option(
        CONTEXT_LENGTH, "Rows of clip_word in the repos layout (CLIP's text context)."
    )
    overwrite: bool = option(
        False,
        "Delete what --out holds of an export first (vggish/, clip_vit_b32/, clip_vit_b32_pooled/, clip_word/, "
        "clip_qst/, manifest.json; nothing else there), so no file of the old export stays beside the new ones.",
    )


@dataclass(frozen=True)
class ImportConfig:
    """`avaf-import`: which .npy folder, which annotations, how to read ambiguous files."""

    npy: str = option(
        None,
        "Folder with vggish/ and clip_vit_b32/ (and clip_word/, clip_qst/), as avaf-export writes it.",
        required=True,
        path={"file_okay": False, "exists": True},
    )
    out: str = option(
        None,
        "The feature store to write (an existing one only with --overwrite).",
        required=True,
        path={"dir_okay": False},
    )
    annotations: tuple[str, ...] = option(
        (),
        "MUSIC-AVQA annotation file or folder (repeatable): question text, type, answer and split. "
        "Default: the questions listed in the folder's manifest.json.",
        path={"exists": True},
    )
    split: str | None = option(
        None,
        "Split of the --annotations files (default: from each file name, avqa-test.json -> test).",
        choices=("train", "val", "test"),
    )
    word_length: str = option(
        "auto",
        "Real rows of clip_word where the manifest does not say: auto drops trailing all-zero rows, "
        "tokenizer counts the CLIP BPE tokens of the question text (needs open_clip), all keeps every row.",
        choices=WORD_LENGTHS,
    )
    pad_short_audio: bool = option(
        False, "Zero-fill audio shorter than the visual features and flag it, instead of skipping."
    )
    overwrite: bool = option(
        False, "Replace an existing OUT (only once the new store is complete); without it OUT is refused."
    )


@click.command("avaf-export", cls=Command, context_settings=CONTEXT)
@common_options
@config_options(ExportConfig)
def export_main(**flags) -> None:
    """Write FEATS as OUT/vggish/{video_id}.npy (T, 128), OUT/clip_vit_b32/{video_id}.npy (T, 50, 512) CLS first,
    OUT/clip_vit_b32_pooled/{video_id}.npy (T, 512), OUT/clip_word/{question_id}.npy (1, 77, 512),
    OUT/clip_qst/{question_id}.npy (1, 512), and OUT/manifest.json (source config, signature, random weights,
    per-video metadata, per-question text, type, answer, split and true word count L).

    Who reads what: vggish/ - GeWu-Lab/MUSIC-AVQA (net_grd_avst/dataloader_avst.py), GeWu-Lab/PSTP-Net and
    GeWu-Lab/TSPM (dataloader.py), Yuzuriha-Inori-x/AVAF-Net (avqa_scripts/dataloader_music.py), AIM-SKKU/QA-TIGER
    (data/feats/vggish); clip_vit_b32/ - PSTP-Net (CLS [:, 0] as frame feature, patches [:, 1:]) and AVAF-Net
    (patches [:, 1:]); clip_word/ - PSTP-Net (squeeze(-3) to (77, 512)) and AVAF-Net ([0], row 0 as sentence,
    rows 1: as words); clip_qst/ - PSTP-Net (squeeze(-2) to (512,)). TSPM and QA-TIGER read ViT-L/14@336px
    frame and ToMe features that avaf does not make. The repositories slice [:60]: MUSIC-AVQA videos have T = 60.
    """
    c = from_flags(ExportConfig, flags)
    report = export_npy(c.feats, c.out, c.dtype, c.layout, c.context_length, c.overwrite)
    for line in report.lines():
        click.echo(line)


@click.command("avaf-import", cls=Command, context_settings=CONTEXT)
@common_options(base=logging.ERROR)
@config_options(ImportConfig)
def import_main(**flags) -> None:
    """Build the feature store OUT from per-file .npy features, so avaf-train runs without re-extracting.
    Inconsistent videos (missing file, wrong width, audio and visual of different T) and questions are
    skipped and listed with the reason; the rest is imported. Exit status 1 when anything was skipped,
    2 when nothing could be imported. -v lists every skipped item as it happens."""
    c = from_flags(ImportConfig, flags)
    report = import_npy(
        c.npy, c.out, c.annotations, c.split, c.word_length, c.pad_short_audio, overwrite=c.overwrite
    )
    for line in report.lines():
        click.echo(line)
    sys.exit(1 if report.skipped else 0)
