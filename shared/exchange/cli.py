"""`avaf-export` and `avaf-import`: feats.h5 <-> the feature folders of the AVQA repositories (docs/reuse.md).

    avaf-export --feats feats.h5 --format npy --out npy/
    avaf-import --npy npy/ --out feats.h5 --annotations json_update/

--format picks the exporter from `avaf.shared.exchange.EXPORTERS`; the work is in the format's module
(`npy_folders`: `export_npy`, `import_npy`). These commands parse, call and print.
"""

from __future__ import annotations

import logging
import sys

import click

from avaf.shared.cli import CONTEXT, Command, common_options
from avaf.shared.exchange import EXPORTERS
from avaf.shared.exchange.npy_folders import (
    DTYPES,
    LAYOUTS,
    WORD_LENGTHS,
    ExportOptions,
    ImportOptions,
    import_npy,
)

EXPORT, IMPORT = ExportOptions(), ImportOptions()  # the defaults live there; the flags show them


@click.command("avaf-export", cls=Command, context_settings=CONTEXT)
@common_options
@click.option(
    "--feats",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The avaf feature store to export.",
)
@click.option(
    "--format",
    type=click.Choice(list(EXPORTERS)),
    default="npy",
    show_default=True,
    help="npy: the avaf set as one .npy file per video and per question (MUSIC-AVQA, PSTP-Net, AVAF-Net "
    "code). qa-tiger, tspm, av-master, stg: the tspm set (avaf-extract --features tspm) in the folders or "
    "HDF5 files that repository's loader reads unchanged, with MANIFEST.json (docs/feature-packs.md).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write (created if needed). One that already holds an export (or any of its folders) is "
    "refused unless --overwrite.",
)
@click.option(
    "--dtype",
    type=click.Choice(list(DTYPES)),
    default=EXPORT.dtype,
    show_default=True,
    help="npy only: array dtype. The repositories write float32; float16 halves the disk and is what the "
    "store holds. Either way float16 -> file -> float16 is exact.",
)
@click.option(
    "--layout",
    type=click.Choice(list(LAYOUTS)),
    default=EXPORT.layout,
    show_default=True,
    help="npy only. repos: clip_word (1, 77, D) with zero rows after the L real tokens and clip_qst (1, D), "
    "as PSTP-Net and AVAF-Net load them; exact: clip_word (L, D) and clip_qst (D,).",
)
@click.option(
    "--context-length",
    type=int,
    default=EXPORT.context_length,
    show_default=True,
    help="npy only: rows of clip_word in the repos layout (CLIP's text context).",
)
@click.option(
    "--pad-to",
    type=click.IntRange(min=1),
    default=EXPORT.pad_to,
    metavar="N",
    help="qa-tiger, tspm, av-master, stg: give every video N seconds (their loaders stack a batch, so all "
    "need one T; MUSIC-AVQA: 60). A shorter video repeats its last second, frames and audio alike (the "
    "MUSIC-AVQA authors' rule); a longer one keeps its first N; the summary counts both, MANIFEST.json "
    "lists them.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Delete what --out holds of an export of this format first (npy: vggish/, clip_vit_b32/, "
    "clip_vit_b32_pooled/, clip_word/, clip_qst/, manifest.json; the others: their own folders or files and "
    "MANIFEST.json; nothing else there), so no file of the old export stays beside the new ones.",
)
def export_main(feats: str, format: str, out: str, **options) -> None:
    """--format npy (the default) writes FEATS as OUT/vggish/{video_id}.npy (T, 128),
    OUT/clip_vit_b32/{video_id}.npy (T, 50, 512) CLS first, OUT/clip_vit_b32_pooled/{video_id}.npy (T, 512),
    OUT/clip_word/{question_id}.npy (1, 77, 512), OUT/clip_qst/{question_id}.npy (1, 512), and
    OUT/manifest.json (source config, signature, random weights, per-video metadata, per-question text, type,
    answer, split and true word count L).

    Who reads what: vggish/ - GeWu-Lab/MUSIC-AVQA (net_grd_avst/dataloader_avst.py), GeWu-Lab/PSTP-Net and
    GeWu-Lab/TSPM (dataloader.py), Yuzuriha-Inori-x/AVAF-Net (avqa_scripts/dataloader_music.py), AIM-SKKU/QA-TIGER
    (data/feats/vggish); clip_vit_b32/ - PSTP-Net (CLS [:, 0] as frame feature, patches [:, 1:]) and AVAF-Net
    (patches [:, 1:]); clip_word/ - PSTP-Net (squeeze(-3) to (77, 512)) and AVAF-Net ([0], row 0 as sentence,
    rows 1: as words); clip_qst/ - PSTP-Net (squeeze(-2) to (512,)). TSPM and QA-TIGER read ViT-L/14@336px
    frame and ToMe features: export the tspm set for them. The repositories slice [:60]: MUSIC-AVQA videos
    have T = 60.

    --format tspm | qa-tiger | av-master | stg: the tspm set (VGGish, CLIP ViT-L/14@336 frames, ToMe-14
    tokens, L/14 question sentence, words and QA prompt) as GeWu-Lab/TSPM, AIM-SKKU/QA-TIGER,
    AoKoo233/AV-Master and zyXiest/STG-master read it: float32 .npy files by video_id and question_id (STG:
    float16 HDF5 files, one dataset per id), and MANIFEST.json with every file's sha256 and every array's
    encoder, weights checksum, preprocessing and padding. What each loader opens and what differs:
    docs/feature-packs.md.
    """
    report = EXPORTERS[format](feats, out, ExportOptions(**options))  # the other flags are its fields
    for line in report.lines():
        click.echo(line)


@click.command("avaf-import", cls=Command, context_settings=CONTEXT)
@common_options(base=logging.ERROR)
@click.option(
    "--npy",
    required=True,
    type=click.Path(file_okay=False, exists=True),
    help="Folder with vggish/ and clip_vit_b32/ (and clip_word/, clip_qst/), as avaf-export writes it.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="The feature store to write (an existing one only with --overwrite).",
)
@click.option(
    "--annotations",
    multiple=True,
    type=click.Path(exists=True),
    help="MUSIC-AVQA annotation file or folder (repeatable): question text, type, answer and split. "
    "Default: the questions listed in the folder's manifest.json.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "val", "test"]),
    help="Split of the --annotations files (default: from each file name, avqa-test.json -> test).",
)
@click.option(
    "--word-length",
    type=click.Choice(list(WORD_LENGTHS)),
    default=IMPORT.word_length,
    show_default=True,
    help="Real rows of clip_word where the manifest does not say: auto drops trailing all-zero rows, "
    "tokenizer counts the CLIP BPE tokens of the question text (needs open_clip), all keeps every row.",
)
@click.option(
    "--pad-short-audio",
    is_flag=True,
    help="Zero-fill audio shorter than the visual features and flag it, instead of skipping.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace an existing OUT (only once the new store is complete); without it OUT is refused.",
)
def import_main(npy: str, out: str, annotations: tuple[str, ...], **options) -> None:
    """Build the feature store OUT from per-file .npy features, so avaf-train runs without re-extracting.
    Inconsistent videos (missing file, wrong width, audio and visual of different T) and questions are
    skipped and listed with the reason; the rest is imported. Exit status 1 when anything was skipped,
    2 when nothing could be imported. -v lists every skipped item as it happens."""
    report = import_npy(npy, out, ImportOptions(annotations=annotations, **options))  # flags = its fields
    for line in report.lines():
        click.echo(line)
    sys.exit(1 if report.skipped else 0)
