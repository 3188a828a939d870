"""clip_resize runs PIL's two resampling passes apart, cropping between them; its bytes must stay those of the
full resize then the centre crop (the CLIP preprocess every encoder was trained with)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from avaf.extract.decode.sampling import clip_resize

# Landscape, portrait and square; 4:3, 16:9, 21:9 and phones' 20:9; odd sizes; upscaled (short side < 224);
# very tall portraits (PIL resamples those vertically first).
SIZES = [
    (256, 144),
    (426, 240),
    (640, 360),
    (641, 361),
    (854, 480),
    (1280, 720),
    (1279, 719),
    (1920, 1080),
    (640, 480),
    (1440, 1080),
    (1920, 800),
    (2560, 1080),
    (360, 640),
    (720, 1280),
    (1080, 1920),
    (720, 1600),
    (1080, 2400),
    (480, 1280),
    (300, 2000),
    (2000, 300),
    (224, 224),
    (398, 224),
    (224, 398),
    (225, 224),
    (100, 100),
    (64, 97),
    (480, 480),
]


def full_resize_then_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """The naive reference: PIL bicubic on the whole frame (shorter side to size), then the centre crop."""
    img = Image.fromarray(rgb)
    width, height = img.size
    new_w, new_h = (
        (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    )
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), Image.BICUBIC)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    return np.asarray(img.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("width, height", SIZES)
def test_clip_resize_is_the_full_resize_then_the_crop_bit_for_bit(width, height):
    rng = np.random.default_rng(width * 10_000 + height)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    checker = ((np.indices((height, width)).sum(axis=0) % 2) * 255).astype(np.uint8)  # overshoots: clipped
    for rgb in (noise, np.repeat(checker[..., None], 3, axis=2)):
        ours = clip_resize(rgb, 224)
        assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
        assert np.array_equal(ours, full_resize_then_crop(rgb, 224))


def test_clip_resize_other_sizes_too():
    rng = np.random.default_rng(0)
    for width, height, size in [(1280, 720, 336), (720, 1600, 288), (500, 300, 32)]:
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        assert np.array_equal(clip_resize(rgb, size), full_resize_then_crop(rgb, size))
