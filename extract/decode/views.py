"""Encoder inputs made on the decode side (decode once, encode many: docs/extraction.md, "Feature packs").

Each visual encoder takes its own resize and crop of the decoded frame: a `View`. The decode side makes every
view an extraction needs from the frame itself, right after the frame is decoded and turned upright, never
from another view, so each equals that encoder's reference preprocessing and only what the encoders consume
(uint8 crops, not full frames) travels to them. Views of the same geometry are one view: two encoders that
take 336-px CLIP crops share them.

    View(224)              CLIP ViT-B/32: shorter side to 224 (PIL bicubic), centre crop 224
    View(384, resize=438)  ToMe-14 (TSPM): shorter side to 438, centre crop 384
    View(0)                the frame as decoded (tests compare the encoders' own preprocessing with it)

PIL and numpy only: decode workers never import torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True, order=True)
class View:
    """The shorter side resized to `resize` (0: to `size`) with PIL's bicubic, the longer side to
    int(resize * long / short) (torchvision's `Resize(int)`), then the centre `size` x `size` crop at offsets
    int(round((new - size) / 2)) (`CenterCrop`). size 0: the frame unchanged."""

    size: int
    resize: int = 0

    @property
    def short(self) -> int:
        return self.resize or self.size

    def describe(self) -> str:
        if not self.size:
            return "the decoded frame, unchanged"
        return f"shorter side to {self.short} (PIL bicubic), centre crop {self.size} x {self.size}"


Views = tuple[View, ...]


def as_views(spec: int | View | Sequence) -> Views:
    """Views from an int (one CLIP view of that side), a View, or a sequence of Views / [size, resize]."""
    if isinstance(spec, (int, np.integer)):
        return (View(int(spec)),)
    if isinstance(spec, View):
        return (spec,)
    return tuple(v if isinstance(v, View) else View(*(int(x) for x in v)) for v in spec)


def geometry(width: int, height: int, view: View) -> tuple[int, int, int, int]:
    """(new width, new height, top, left) of `view` on a width x height frame."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(view.short * long / short)
    new_w, new_h = (view.short, new_long) if width <= height else (new_long, view.short)
    return new_w, new_h, int(round((new_h - view.size) / 2.0)), int(round((new_w - view.size) / 2.0))


def resize_view(rgb: np.ndarray, view: View) -> np.ndarray:
    """(H, W, 3) uint8 -> (S, S, 3) uint8: exactly PIL's full bicubic resize, then the centre crop.

    PIL resamples in two one-axis passes, each line on its own (Resample.c), so the first pass alone, a
    crop, then the second pass on the lines kept give the same bytes with less work (tests/test_resize.py,
    tests/test_packs.py). PIL's resize with a `box` does not: the box is float32, which moves the taps.
    """
    if not view.size:
        return rgb
    height, width = rgb.shape[:2]
    new_w, new_h, top, left = geometry(width, height, view)
    s = view.size
    img = Image.fromarray(rgb)
    # PIL's order: horizontal first unless the height shrinks more than twice as much as the width.
    if 0 < height - new_h and (width - new_w) * 2 < height - new_h:
        img = img.resize((width, new_h), Image.BICUBIC)  # vertical pass: (new_h, W)
        img = img.crop((0, top, width, top + s)).resize((new_w, s), Image.BICUBIC)
        return np.asarray(img.crop((left, 0, left + s, s)))
    img = img.resize((new_w, height), Image.BICUBIC)  # horizontal pass: (H, new_w)
    img = img.crop((left, 0, left + s, height)).resize((s, new_h), Image.BICUBIC)
    return np.asarray(img.crop((0, top, s, top + s)))


def make_views(rgb: np.ndarray, views: Views) -> tuple[np.ndarray, ...]:
    """Every view of one upright frame, each from the frame itself."""
    return tuple(resize_view(rgb, v) for v in views)


def stack_views(chosen: list[tuple], views: Views) -> tuple:
    """(T, S, S, 3) per view from T per-frame tuples (NumPy arrays, or CUDA tensors of a GPU decoder)."""
    if not chosen:
        return tuple(np.zeros((0, v.size, v.size, 3), np.uint8) for v in views)
    stack = np.stack
    if not isinstance(chosen[0][0], np.ndarray):
        import torch

        stack = torch.stack
    return tuple(stack([c[i] for c in chosen]) for i in range(len(views)))


def empty_views(views: Views) -> tuple[np.ndarray, ...]:
    """No frames (an audio-only file): (0, S, S, 3) per view."""
    return stack_views([], views)
