"""`avaf-export` and `avaf-import`: feats.h5 <-> the per-file .npy folders of the AVQA repositories (issue 7).

    avaf-export --feats feats.h5 --format npy --out npy/
    avaf-import --npy npy/ --out feats.h5 --annotations json_update/

The work is in `avaf.shared.exchange.formats` (`export_npy`, `import_npy`); these commands parse, call and print.
"""

from __future__ import annotations

import logging
import sys

import click

from avaf.shared.avqa.annotations import AnnotationError
from avaf.shared.errors import StoreError
from avaf.shared.exchange.formats import (
    CONTEXT_LENGTH,
    DTYPES,
    LAYOUTS,
    WORD_LENGTHS,
    ExchangeError,
    export_npy,
    import_npy,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
ERRORS = (StoreError, ExchangeError, AnnotationError, FileNotFoundError)
Choice = click.Choice

EXPORT_OPTIONS = {  # flag -> click.option keywords
    "--feats": dict(required=True, type=click.Path(dir_okay=False), help="The avaf feature store to export."),
    "--format": dict(
        type=Choice(["npy"]),
        default="npy",
        help="Output format: one .npy file per video and per question (the AVQA repositories' layout).",
    ),
    "--out": dict(
        required=True, type=click.Path(file_okay=False), help="Folder to write (created if needed)."
    ),
    "--dtype": dict(
        type=Choice(DTYPES),
        default="float32",
        help="Array dtype. The repositories write float32; float16 halves the disk and is what the store "
        "holds. Either way float16 -> file -> float16 is exact.",
    ),
    "--layout": dict(
        type=Choice(LAYOUTS),
        default="repos",
        help="repos: clip_word (1, 77, D) with zero rows after the L real tokens and clip_qst (1, D), as "
        "PSTP-Net and AVAF-Net load them; exact: clip_word (L, D) and clip_qst (D,).",
    ),
    "--context-length": dict(
        type=int, default=CONTEXT_LENGTH, help="Rows of clip_word in the repos layout (CLIP's text context)."
    ),
}
IMPORT_OPTIONS = {
    "--npy": dict(
        required=True,
        type=click.Path(file_okay=False, exists=True),
        help="Folder with vggish/ and clip_vit_b32/ (and clip_word/, clip_qst/), as avaf-export writes it.",
    ),
    "--out": dict(required=True, type=click.Path(dir_okay=False), help="The feature store to write."),
    "--annotations": dict(
        multiple=True,
        type=click.Path(exists=True),
        help="MUSIC-AVQA annotation file or folder (repeatable): question text, type, answer and split. "
        "Default: the questions listed in the folder's manifest.json.",
    ),
    "--split": dict(
        type=Choice(["train", "val", "test"]),
        help="Split of the --annotations files (default: from each file name, avqa-test.json -> test).",
    ),
    "--word-length": dict(
        type=Choice(WORD_LENGTHS),
        default="auto",
        help="Real rows of clip_word where the manifest does not say: auto drops trailing all-zero rows, "
        "tokenizer counts the CLIP BPE tokens of the question text (needs open_clip), all keeps every row.",
    ),
    "--pad-short-audio": dict(
        is_flag=True,
        help="Zero-fill audio shorter than the visual features and flag it, instead of skipping.",
    ),
    "--verbose": dict(is_flag=True, help="Also log every skipped item as it happens."),
}


def _options(table: dict):
    def apply(f):
        for flag, kwargs in reversed(table.items()):
            f = click.option(flag, show_default="default" in kwargs, **kwargs)(f)
        return f

    return apply


def _fail(command: str, e: Exception) -> None:
    click.echo(f"{command}: {e}", err=True)
    sys.exit(2)


@click.command(context_settings=CONTEXT)
@_options(EXPORT_OPTIONS)
def export_main(feats: str, format: str, out: str, dtype: str, layout: str, context_length: int) -> None:
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
    logging.basicConfig(level=logging.WARNING, format="avaf-export: %(message)s")
    try:
        report = export_npy(feats, out, dtype=dtype, layout=layout, context_length=context_length)
    except ERRORS as e:
        _fail("avaf-export", e)
    for line in report.lines():
        click.echo(line)


@click.command(context_settings=CONTEXT)
@_options(IMPORT_OPTIONS)
def import_main(npy, out, annotations, split, word_length, pad_short_audio, verbose) -> None:
    """Build the feature store OUT from per-file .npy features, so avaf-train runs without re-extracting.
    Inconsistent videos (missing file, wrong width, audio and visual of different T) and questions are
    skipped and listed with the reason; the rest is imported. Exit status 1 when anything was skipped,
    2 when nothing could be imported."""
    logging.basicConfig(
        level=logging.WARNING if verbose else logging.ERROR, format="%(levelname)s %(message)s"
    )
    try:
        report = import_npy(npy, out, annotations, split, word_length, pad_short_audio)
    except ERRORS as e:
        _fail("avaf-import", e)
    for line in report.lines():
        click.echo(line)
    sys.exit(1 if report.skipped else 0)
