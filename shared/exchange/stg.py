"""STG's feature files (zyXiest/STG-master): an HDF5 file per feature type, a dataset per video or question.

STG's loader (src/dataset.py) reads every file whole at start, iterating its top-level keys: a video's
dataset is named by its video_id, a question's by str(question_id), float16 (it casts to float32 itself).
The word file holds one group per question with two datasets: `qst_feat` (1, 20, D) and `tokens`, the
CLIP BPE strings of the question's 77 token ids (`<|startoftext|>`, `how</w>`, ..., `<|endoftext|>`, then
`!`, which is what pad id 0 decodes to); the loader masks out those three and keeps the first 20 entries,
so `tokens` is what gives the model its word mask. The tokens come from open_clip's tokenizer (the same
BPE as OpenAI's CLIP) on the string the tspm set's words encode (`sets.tspm_question_text`: the stored
question and a final '?'), so the mask marks the positions of `qst_feat` that hold its tokens. Layout facts
and what differs: layouts.LAYOUTS["stg"].
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from avaf.shared.exchange.layouts import Target
from avaf.shared.exchange.manifest import file_sha256
from avaf.shared.files import commit, tmp_name
from avaf.shared.store.sets import tspm_question_text

CONTEXT_LENGTH = 77  # CLIP's text context: STG's extractor keeps every token string
FEATURES, TOKENS = "qst_feat", "tokens"  # the datasets of a question's group in the word file


START, END = "<|startoftext|>", "<|endoftext|>"  # OpenAI's names; open_clip's decoder says <start_of_text>


class ClipTokens:
    """The CLIP BPE strings of a text's 77 token ids, as OpenAI's tokenizer decodes them. open_clip's copy has
    the same vocabulary and ids but names the two special tokens otherwise, and STG masks OpenAI's names."""

    def __init__(self) -> None:
        from open_clip.tokenizer import SimpleTokenizer  # imports torch: only an STG export pays for it

        self.bpe = SimpleTokenizer()
        self.names = {self.bpe.sot_token_id: START, self.bpe.eot_token_id: END}

    def __call__(self, text: str) -> np.ndarray:
        """(77,) bytes: start token, the text's BPE tokens (cut to fit), end token, then pad id 0's '!'."""
        ids = [self.bpe.sot_token_id, *self.bpe.encode(text)[: CONTEXT_LENGTH - 2], self.bpe.eot_token_id]
        ids += [0] * (CONTEXT_LENGTH - len(ids))
        return np.array([self.names.get(i, self.bpe.decoder[i]).encode("utf-8") for i in ids])


class StgSink:
    """Writes the STG files of `targets` under temporary names; `close` renames them and hashes them."""

    def __init__(self, out: Path, targets: tuple[Target, ...]) -> None:
        self.out = out
        self.paths = {t.path: out / t.path for t in targets}
        self.tmp = {p: tmp_name(path) for p, path in self.paths.items()}
        self.files = {p: h5py.File(tmp, "w") for p, tmp in self.tmp.items()}
        self.tokens = ClipTokens() if any(t.positions for t in targets) else None

    def video(self, target: Target, video_id: str, array: np.ndarray) -> None:
        self.files[target.path].create_dataset(video_id, data=array)

    def question(self, target: Target, question_id: int, array: np.ndarray, text: str) -> None:
        f = self.files[target.path]
        if target.array != "words":
            f.create_dataset(str(question_id), data=array)
            return
        group = f.create_group(str(question_id))
        group.create_dataset(FEATURES, data=array)
        group.create_dataset(TOKENS, data=self.tokens(tspm_question_text(text)))

    def close(self) -> dict[str, str]:
        """Complete every file under its name; returns path -> sha256."""
        for f in self.files.values():
            f.close()
        sums = {}
        for p, tmp in self.tmp.items():
            commit(tmp, self.paths[p])
            sums[p] = file_sha256(self.paths[p])
        return sums

    def abort(self) -> None:
        """Drop the unfinished files (a failed export leaves none behind)."""
        for p, f in self.files.items():
            f.close()
            self.tmp[p].unlink(missing_ok=True)
