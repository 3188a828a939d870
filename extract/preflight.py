"""What `avaf-extract` checks before it imports torch, open_clip or Ray: the inputs a user types wrong.

A wrong annotation file, --qa-prompts table, --clip-model name or weights path is one line naming the flag
or the file, in a fraction of a second, instead of after the seconds that loading torch and starting Ray take
(tests/benchmarks/bench_errors.py). Nothing here imports a model library: open_clip's model names are read
from its packaged config files. The encoders check again, fully, when they load; these checks only move the
common mistakes to the front. The files read here (the questions, the prompt table) are handed on to
`run_extract` as `Inputs`, so a run reads each once.
"""

from __future__ import annotations

import difflib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from avaf.extract.config import ExtractConfig
from avaf.extract.packs import parse_features
from avaf.extract.prompts import PromptTable, load_prompt_table
from avaf.shared.avqa.annotations import Question, load_questions
from avaf.shared.errors import AvafError
from avaf.shared.ray_session import ray_address
from avaf.shared.store.sets import TSPM

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass(frozen=True)
class Inputs:
    """The input files as read and checked: the --annotations questions and the --qa-prompts table (None
    without one). `run_extract` takes them from the preflight instead of reading the files again."""

    questions: list[Question]
    prompts: PromptTable | None = None


def check_extract(cfg: ExtractConfig) -> Inputs:
    """Raise on what can be checked without torch or Ray: the --videos folder (it holds media files), the
    --qa-prompts table and the annotation files (`read_inputs`), the --clip-model name and, for a run on this
    machine (no cluster address), the weight paths. Returns what it read, for `run_extract`."""
    if cfg.input.videos:
        check_videos(cfg.input.videos, questions_too=bool(cfg.input.annotations))
    inputs = read_inputs(cfg)
    check_clip_model(cfg.clip.model)
    if not ray_address(cfg.runtime.address):  # on a cluster the weights are the nodes' files, not ours
        check_weight_paths(cfg.runtime.weights_dir, cfg.clip.pretrained, cfg.vggish.weights)
    return inputs


def read_inputs(cfg: ExtractConfig) -> Inputs:
    """The --qa-prompts table (only with the tspm pack) and the questions of every --annotations file, each
    file read once and checked: a malformed one is an error whose one line names the file and the problem."""
    prompts = None
    if cfg.input.qa_prompts is not None:
        packs = parse_features(cfg.features)
        if TSPM not in packs:
            raise ValueError(
                f"--qa-prompts {cfg.input.qa_prompts}: QA prompts belong to the tspm pack, which --features "
                f"{','.join(packs)} leaves out"
            )
        prompts = load_prompt_table(cfg.input.qa_prompts)
    return Inputs(load_questions(cfg.input.annotations, cfg.input.split), prompts)


def check_videos(folder: str, questions_too: bool = False) -> None:
    """--videos is a folder holding at least one video or audio file (by extension, as the pipeline lists
    them; two files of one video id are refused here too): an empty one is an error, not a run of 0 videos."""
    from avaf.extract.decode.backends import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, scan_media  # PyAV, no torch

    if not Path(folder).is_dir():
        raise AvafError(f"--videos {folder}: no such folder")
    media, others = scan_media(folder)
    if media:
        return
    n = len(others)
    held = f"it holds {n} other file{'s' * (n > 1)}, e.g. {others[0].name}" if n else "it holds no files"
    instead = "; for the questions alone leave --videos out" if questions_too else ""
    raise AvafError(
        f"--videos {folder}: no video files under {folder} ({held}); looked for the extensions "
        f"{' '.join(sorted(VIDEO_EXTENSIONS | AUDIO_EXTENSIONS))}{instead}"
    )


def open_clip_models() -> list[str]:
    """The model names open_clip ships configs for, read from its package folder without importing it
    (empty if open_clip is not installed: nothing is checked then)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    folders = [Path(p) / "model_configs" for p in spec.submodule_search_locations]
    return sorted(f.stem for folder in folders if folder.is_dir() for f in folder.glob("*.json"))


def check_clip_model(model: str) -> None:
    """--clip-model: an open_clip model name or a model-config JSON file (names with a schema, "hf-hub:...",
    are left to the encoder, which refuses them)."""
    if model.endswith(".json"):
        if not Path(model).is_file():
            raise AvafError(f"--clip-model {model}: no such model-config file")
        return
    known = open_clip_models()
    if ":" in model or not known or model in known:
        return
    close = difflib.get_close_matches(model, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise AvafError(
        f"--clip-model {model!r}: open_clip has no such model ({hint}{len(known)} names in "
        "open_clip/model_configs/), nor is it a model-config .json file"
    )


def check_weight_paths(weights_dir: str | None, clip_pretrained: str, vggish_weights: str) -> None:
    """The weights folder and weight files named on the command line exist on this machine."""
    if weights_dir is not None and not Path(weights_dir).expanduser().is_dir():
        raise AvafError(f"--weights-dir {weights_dir}: no such folder (avaf-fetch-weights DIR fills one)")
    if vggish_weights not in ("default", "random") and not Path(vggish_weights).expanduser().is_file():
        raise AvafError(
            f"--vggish-weights {vggish_weights}: no such file (use 'default', a file, or 'random')"
        )
    if clip_pretrained.endswith(WEIGHT_SUFFIXES) and not Path(clip_pretrained).expanduser().is_file():
        raise AvafError(
            f"--clip-pretrained {clip_pretrained}: no such file (an open_clip tag, a file, or 'random')"
        )
