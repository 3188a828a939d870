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
