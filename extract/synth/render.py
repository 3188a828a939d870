"""Render a generated scene (`scene.py`) into a real video file: H.264 frames and AAC audio in an mp4 (PyAV).

Frames: the setting's background (indoor: a wall over a floor; outdoor: a sky over grass), then each visible
instrument's sprite in its box: its shape filled with its colour times a stripe texture (1.0 on one half of
each 8-pixel period, 0.6 on the other) inside a 2-pixel dark outline; its stripes move 2 pixels a frame while
it sounds and stand still while it is silent. Audio: mono, 16 kHz by default (the rate avaf decodes to): each
instrument the sum of its six harmonics times a note envelope times its gain over its sounding intervals,
exactly zero elsewhere; the mix scaled down by `mix_gain` only where it would exceed 0.95. The bytes depend
only on the scene: libx264 on one thread with its macroblock tree off, which made the same frames encode
differently from run to run (`write_video`).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from avaf.extract.synth.scene import INSTRUMENTS, Scene, Source, fundamental, sprite_box
from avaf.shared.store.schema import SAMPLE_RATE

STRIPE = 8  # texture period in pixels
STEP = 2  # pixels the stripes move per frame while the instrument sounds
PHASES = STRIPE // STEP
DARK, LIGHT = 0.6, 1.0  # texture levels; mean 0.8
OUTLINE = (25, 25, 25)
PEAK = 0.95
AUDIO_CHUNK = 1024


def background(setting: str, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8: indoor a wall (70%) over a floor; outdoor a sky gradient (60%) over grass."""
    width, height = size
    rows = np.arange(height)[:, None] / max(height - 1, 1)  # (H, 1)
    if setting == "indoor":
        split = rows < 0.7
        colour = np.where(split, np.array([150, 128, 104]), np.array([96, 72, 56]))
    else:
        sky = np.array([110, 170, 230]) + rows * np.array([60, 40, 10]) / 0.6
        colour = np.where(rows < 0.6, sky, np.array([60, 130, 55]))
    return np.broadcast_to(colour[:, None, :], (height, width, 3)).round().astype(np.uint8).copy()


def shape_mask(shape: str, width: int, height: int) -> np.ndarray:
    """(height, width) bool: the shape inscribed in its box."""
    u = (np.arange(width) + 0.5) / width * 2 - 1  # (W,)
    v = (np.arange(height)[:, None] + 0.5) / height * 2 - 1  # (H, 1)
    if shape == "disc":
        mask = u**2 + v**2 <= 1
    elif shape == "triangle":
        mask = np.abs(u) <= (v + 1) / 2
    elif shape == "diamond":
        mask = np.abs(u) + np.abs(v) <= 1
    else:  # square, tall, wide: the whole box
        mask = np.ones((height, width), bool)
    return np.broadcast_to(mask, (height, width)).copy()


def _erode(mask: np.ndarray, pixels: int) -> np.ndarray:
    inner = mask.copy()
    for _ in range(pixels):
        padded = np.pad(inner, 1)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return inner


def texture(kind: str, width: int, height: int, shift: int) -> np.ndarray:
    """(height, width) brightness factors, DARK or LIGHT, the pattern moved by `shift` pixels."""
    x = np.arange(width)[None, :]  # (1, w)
    y = np.arange(height)[:, None]  # (h, 1)
    half = STRIPE // 2
    if kind == "checker":
        light = ((x + shift) // half + y // half) % 2 == 0
    else:
        coord = {"hstripes": y + 0 * x, "vstripes": x + 0 * y, "dstripes": x + y}[kind]
        light = (coord + shift) % STRIPE < half
    return np.where(light, LIGHT, DARK)


def sprite(source: Source, size: tuple[int, int]) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]:
    """(box, mask (h, w), images (PHASES, h, w, 3) uint8): the instrument drawn at each texture phase."""
    colour, shape, kind, _, _ = INSTRUMENTS[source.instrument]
    box = sprite_box(source.position, shape, size)
    w, h = box[2] - box[0], box[3] - box[1]
    mask = shape_mask(shape, w, h)
    inner = _erode(mask, 2)
    images = []
    for phase in range(PHASES):
        fill = texture(kind, w, h, phase * STEP)[..., None] * np.array(colour)  # (h, w, 3)
        image = np.where(inner[..., None], fill, np.array(OUTLINE))
        images.append(image.round().astype(np.uint8))
    return box, mask, np.stack(images)


def render_frames(scene: Scene) -> np.ndarray:
    """(duration * fps, H, W, 3) uint8: every frame of the scene."""
    base = background(scene.setting, scene.size)
    n = scene.duration * scene.fps
    frames = np.broadcast_to(base, (n, *base.shape)).copy()
    times = np.arange(n) / scene.fps
    for source in scene.visible:
        (x0, y0, x1, y1), mask, images = sprite(source, scene.size)
        moving = np.array([source.sounds_at(t) for t in times])
        phase = np.cumsum(moving) % PHASES  # (n,): a step in every sounding frame, frozen in silent ones
        region = frames[:, y0:y1, x0:x1]  # a view: (n, h, w, 3)
        region[:] = np.where(mask[None, ..., None], images[phase], region)
    return frames


def _envelope(rate: int, sample_rate: int) -> np.ndarray:
    """One note of 1/rate s: 30 ms attack, decay to 0.6, release over the last 15%; unit RMS.

    The attack and release are raised-cosine ramps, so the notes splash little energy onto other pitches.
    """
    length = sample_rate // rate
    tau = np.arange(length) / sample_rate
    note = 1 / rate
    ramp = lambda x: 0.5 - 0.5 * np.cos(np.pi * np.clip(x, 0, 1))
    env = ramp(tau / 0.03) * (0.6 + 0.4 * np.exp(-tau / (0.3 * note))) * ramp((note - tau) / (0.15 * note))
    return env / np.sqrt(np.mean(env**2))


def source_wave(source: Source, duration: int, sample_rate: int) -> np.ndarray:
    """(duration * sample_rate,) float64: the instrument alone, at its gain, zero where it is silent."""
    wave = np.zeros(duration * sample_rate)
    if not source.sounding:
        return wave
    harmonics = np.array(INSTRUMENTS[source.instrument][4])
    k = np.arange(1, len(harmonics) + 1)
    phases = np.pi * k * (k - 1) / len(k)  # Schroeder phases: a low peak for the RMS
    scale = source.gain / np.sqrt(np.sum(harmonics**2) / 2)  # unit-RMS tone times the gain
    note = _envelope(source.rate, sample_rate)
    for start, end in source.intervals:
        a, b = start * sample_rate, end * sample_rate
        t = np.arange(a, b) / sample_rate  # (S,)
        cycles = 2 * np.pi * fundamental(source.instrument) * t  # continuous across intervals
        tone = harmonics @ np.sin(k[:, None] * cycles + phases[:, None])  # (S,)
        wave[a:b] = scale * tone * np.resize(note, b - a)
    return wave


def render_audio(scene: Scene, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, float]:
    """(mono float32 samples, mix_gain): the sum of the instruments, scaled by mix_gain to peak <= 0.95."""
    mix = sum(source_wave(s, scene.duration, sample_rate) for s in scene.sources)
    peak = float(np.abs(mix).max())
    mix_gain = min(1.0, PEAK / peak) if peak > 0 else 1.0
    return (mix * mix_gain).astype(np.float32), mix_gain


def write_video(
    scene: Scene, path: str | Path, sample_rate: int = SAMPLE_RATE, crf: int = 20, preset: str = "veryfast"
) -> float:
    """Write the scene as an mp4 (H.264 yuv420p + AAC mono); returns the audio's mix_gain."""
    frames = render_frames(scene)
    audio, mix_gain = render_audio(scene, sample_rate)
    with av.open(str(path), "w", format="mp4") as out:
        # mbtree on, PyAV 18's libx264 wrote other bytes for the same frames from run to run, even on one
        # thread (4 different files in 8 runs at 224x224 and 320x240); off, and AAC, every run the same bytes
        options = {"crf": str(crf), "preset": preset, "x264-params": "mbtree=0"}
        video = out.add_stream("libx264", rate=scene.fps, options=options)
        video.width, video.height, video.pix_fmt = scene.size[0], scene.size[1], "yuv420p"
        video.thread_count = 1  # one thread: the same bytes on every run and machine
        sound = out.add_stream(
            "aac", rate=sample_rate, layout="mono", options={"aac_coder": "fast", "aac_pns": "0"}
        )
        sound.bit_rate = 64000
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        for start in range(0, len(audio), AUDIO_CHUNK):
            frame = av.AudioFrame.from_ndarray(
                audio[None, start : start + AUDIO_CHUNK], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = sample_rate, start
            out.mux(sound.encode(frame))
        out.mux(sound.encode())
    return mix_gain
