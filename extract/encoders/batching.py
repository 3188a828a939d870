"""Batch-invariant encoding: every forward pass of an encoder has the same shape (DESIGN.md §3 "Determinism").

A video's features must be a function of the video and the config, never of which other videos shared its
batch: resume, local Ray, a cluster and --in-process then write the same bits.
"""

from __future__ import annotations

import torch
from torch import Tensor


def pad_batch(x: Tensor, size: int) -> Tensor:
    """x (n, ...) with zero rows appended up to `size` rows: encoders always run passes of one shape.

    The matrix kernels block a batch differently for different batch sizes (and CPUs), so the last bits of a
    row depended on how many rows shared its pass, i.e. on which other videos were encoded with it. At one
    fixed shape a row's result depends on its own input only (measured: rows rolled within a pass of fixed
    size are bit-identical on AVX2 and AVX-512; a pass of another size differs by ~3e-6).
    """
    if len(x) >= size:
        return x
    return torch.cat((x, x.new_zeros(size - len(x), *x.shape[1:])))


TEXT_ROWS = 32  # questions per text pass, padded: a question's bits never depend on its neighbours
TEXT_LENGTH_STEP = 16  # a trimmed text pass covers its questions' own lengths rounded up to this


def text_passes(ends: Tensor, context: int, trim: bool) -> list[tuple[Tensor, int]]:
    """(rows of the questions, positions) of each text pass, every pass padded to TEXT_ROWS rows.

    A question's pass length is a function of the question alone: its end token's position + 1 rounded up
    to TEXT_LENGTH_STEP (at most `context`), or the whole context without trimming. So a question encoded
    alone, among others, in any batch or by any worker runs in a pass of the same shape (pad_batch's rule
    for video frames, here for text): the same bits."""
    if trim:
        lengths = ((ends + TEXT_LENGTH_STEP) // TEXT_LENGTH_STEP * TEXT_LENGTH_STEP).clamp(max=context)
    else:
        lengths = torch.full_like(ends, context)
    passes = []
    for n in sorted(set(lengths.tolist())):
        rows = (lengths == n).nonzero().flatten()
        passes += [(rows[a : a + TEXT_ROWS], n) for a in range(0, len(rows), TEXT_ROWS)]
    return passes
