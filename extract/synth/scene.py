"""Scenes of the generated AVQA set: which instruments are where, how they sound, and when.

A scene is a short music performance with a known ground truth: one to three instruments at the left, middle
or right of the frame, and in half of the scenes one more that is heard but not seen. Each is one of the 22
instruments among the 42 MUSIC-AVQA answers, with a look (colour, shape, stripes that scroll while it
sounds: `INSTRUMENTS`), a sound (a fundamental on a quarter-tone grid in 220-403 Hz, so no overtone passes
for another's fundamental; six harmonics; 1, 2 or 4 notes a second; a gain of 0.04, 0.08 or 0.16) and
sounding intervals of whole seconds. Two of one type share look and sound and differ in place and timing.
`make_scene(rng, ...)` draws a scene; `Scene.to_dict()` is what `scenes.json` stores. Rendering: `render.py`,
questions: `questions.py`, the whole set: `generate.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

POSITIONS = ("left", "middle", "right")
SETTINGS = ("indoor", "outdoor")
GAINS = (0.04, 0.08, 0.16)
RATES = (1, 2, 4)  # notes per second
BASE_HZ = 220.0  # the fundamentals are BASE_HZ * 2 ** (k / 24), k = 0..21: all below 2 * BASE_HZ

# name: (colour RGB, shape, texture, quarter-tone step k, relative amplitudes of harmonics 1..6)
INSTRUMENTS: dict[str, tuple[tuple[int, int, int], str, str, int, tuple[float, ...]]] = {
    "cello": ((242, 24, 24), "tall", "hstripes", 2, (1.0, 0.7, 0.5, 0.35, 0.25, 0.15)),
    "congas": ((140, 178, 71), "disc", "checker", 5, (1.0, 0.1, 0.4, 0.0, 0.15, 0.0)),
    "pipa": ((24, 242, 183), "diamond", "vstripes", 15, (1.0, 0.6, 0.2, 0.4, 0.1, 0.2)),
    "ukulele": ((81, 71, 178), "disc", "dstripes", 18, (1.0, 0.4, 0.4, 0.1, 0.1, 0.05)),
    "piano": ((242, 24, 143), "wide", "vstripes", 10, (1.0, 0.5, 0.25, 0.12, 0.06, 0.03)),
    "accordion": ((178, 159, 71), "square", "vstripes", 12, (1.0, 0.8, 0.8, 0.6, 0.5, 0.4)),
    "clarinet": ((24, 242, 64), "tall", "checker", 13, (1.0, 0.05, 0.6, 0.05, 0.4, 0.05)),
    "guzheng": ((71, 120, 178), "wide", "dstripes", 8, (1.0, 0.3, 0.6, 0.2, 0.3, 0.1)),
    "saxophone": ((222, 24, 242), "triangle", "hstripes", 11, (1.0, 0.9, 0.6, 0.5, 0.3, 0.2)),
    "drum": ((178, 101, 71), "disc", "hstripes", 4, (1.0, 0.0, 0.2, 0.0, 0.05, 0.0)),
    "violin": ((104, 242, 24), "diamond", "hstripes", 19, (1.0, 0.5, 0.33, 0.25, 0.2, 0.17)),
    "bagpipe": ((71, 178, 178), "triangle", "checker", 16, (1.0, 0.2, 0.9, 0.2, 0.8, 0.2)),
    "bassoon": ((104, 24, 242), "tall", "vstripes", 3, (1.0, 0.8, 0.3, 0.5, 0.1, 0.2)),
    "acoustic_guitar": ((178, 71, 101), "diamond", "checker", 9, (1.0, 0.45, 0.3, 0.15, 0.1, 0.05)),
    "banjo": ((222, 242, 24), "disc", "vstripes", 17, (1.0, 0.6, 0.5, 0.45, 0.3, 0.3)),
    "electric_bass": ((71, 178, 120), "tall", "dstripes", 1, (1.0, 0.3, 0.1, 0.05, 0.0, 0.0)),
    "flute": ((24, 64, 242), "tall", "hstripes", 21, (1.0, 0.2, 0.05, 0.02, 0.0, 0.0)),
    "trumpet": ((178, 71, 159), "triangle", "vstripes", 14, (1.0, 0.95, 0.85, 0.7, 0.55, 0.4)),
    "erhu": ((242, 143, 24), "tall", "checker", 20, (1.0, 0.35, 0.5, 0.2, 0.25, 0.1)),
    "xylophone": ((81, 178, 71), "wide", "hstripes", 7, (1.0, 0.0, 0.0, 0.3, 0.0, 0.0)),
    "tuba": ((24, 183, 242), "square", "hstripes", 0, (1.0, 0.4, 0.15, 0.05, 0.02, 0.0)),
    "suona": ((140, 71, 178), "triangle", "dstripes", 6, (1.0, 0.7, 0.9, 0.6, 0.7, 0.5)),
}
NAMES: tuple[str, ...] = tuple(INSTRUMENTS)
# Width, height of each shape's box as fractions of the sprite size (SPRITE of a third of the frame).
SHAPE_BOX = {"disc": (1.0, 1.0), "square": (0.85, 0.85), "triangle": (1.0, 0.9), "diamond": (0.8, 1.0)}
SHAPE_BOX |= {"tall": (0.45, 1.0), "wide": (1.0, 0.55)}
SPRITE = 0.9


def fundamental(name: str) -> float:
    """The instrument's fundamental in Hz."""
    return BASE_HZ * 2.0 ** (INSTRUMENTS[name][3] / 24)


def sprite_box(position: str, shape: str, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), end-exclusive, of a sprite centred in its third of a (width, height) frame."""
    width, height = size
    third = width / 3
    side = SPRITE * min(third, 0.8 * height)
    w, h = (round(f * side) for f in SHAPE_BOX[shape])
    cx = (POSITIONS.index(position) + 0.5) * third
    cy = 0.55 * height
    x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
    return x0, y0, x0 + w, y0 + h


@dataclass(frozen=True)
class Source:
    """One instrument of a scene; position None: heard but not seen (off-screen)."""

    instrument: str
    position: str | None
    gain: float
    rate: int
    intervals: tuple[tuple[int, int], ...]

    @property
    def visible(self) -> bool:
        return self.position is not None

    @property
    def sounding(self) -> bool:
        return bool(self.intervals)

    @property
    def onset(self) -> int | None:
        return self.intervals[0][0] if self.intervals else None

    @property
    def seconds(self) -> int:
        """Total sounding time."""
        return sum(end - start for start, end in self.intervals)

    def sounds_at(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.intervals)


@dataclass(frozen=True)
class Scene:
    """A synthetic performance: `sources` visible ones first, left to right, then the off-screen one."""

    video_id: str
    seed: int  # seeds questions_for, so the questions are a function of the scene alone
    duration: int  # seconds
    size: tuple[int, int]  # (width, height)
    fps: int
    setting: str
    sources: tuple[Source, ...]

    @property
    def visible(self) -> list[Source]:
        return [s for s in self.sources if s.visible]

    @property
    def sounding(self) -> list[Source]:
        return [s for s in self.sources if s.sounding]

    def to_dict(self) -> dict:
        """The scene as `scenes.json` stores it, with each instrument's look, sound and box spelled out."""
        sources = []
        for s in self.sources:
            colour, shape, texture, _, harmonics = INSTRUMENTS[s.instrument]
            box = sprite_box(s.position, shape, self.size) if s.visible else None
            sources.append(
                {
                    "instrument": s.instrument,
                    "position": s.position,
                    "visible": s.visible,
                    "box": list(box) if box else None,
                    "colour": list(colour),
                    "shape": shape,
                    "texture": texture,
                    "f0_hz": round(fundamental(s.instrument), 3),
                    "harmonics": list(harmonics),
                    "gain": s.gain,
                    "notes_per_second": s.rate,
                    "intervals": [list(i) for i in s.intervals],
                }
            )
        return {
            "video_id": self.video_id,
            "seed": self.seed,
            "duration": self.duration,
            "width": self.size[0],
            "height": self.size[1],
            "fps": self.fps,
            "setting": self.setting,
            "sources": sources,
        }


def _intervals(rng: np.random.Generator, duration: int) -> tuple[tuple[int, int], ...]:
    """Full length (35%), one stretch of at least 2 s (40%) or two stretches with a gap (25%)."""
    draw = rng.random()
    if draw < 0.35:
        return ((0, duration),)
    if draw < 0.75 or duration < 4:
        length = int(rng.integers(2, duration + 1))
        start = int(rng.integers(0, duration - length + 1))
        return ((start, start + length),)
    a, b, c, d = sorted(int(x) for x in rng.choice(duration + 1, 4, replace=False))
    return ((a, b), (c, d))


def make_scene(
    rng: np.random.Generator,
    video_id: str = "00000001",
    duration: int = 10,
    size: tuple[int, int] = (224, 224),
    fps: int = 8,
) -> Scene:
    """Draw one scene: 1-3 visible instruments (30% of two-or-more share a type), 50% an off-screen one.

    Visible instruments are silent with probability 0.2; at least one instrument always sounds. A duplicate
    plays together with its twin 20% of the time (so "simultaneously" is a possible answer).
    """
    if duration < 3:
        raise ValueError(f"a synthetic scene needs at least 3 seconds, got {duration}")
    seed = int(rng.integers(2**62))
    setting = SETTINGS[int(rng.integers(len(SETTINGS)))]
    n_visible = int(rng.choice([1, 2, 3], p=[0.25, 0.35, 0.4]))
    positions = [POSITIONS[i] for i in sorted(rng.choice(3, n_visible, replace=False))]
    duplicate = n_visible >= 2 and rng.random() < 0.3
    offscreen = rng.random() < 0.5
    kinds = [NAMES[i] for i in rng.choice(len(NAMES), n_visible - duplicate + offscreen, replace=False)]
    visible_kinds = kinds[: n_visible - duplicate] + kinds[:1] * duplicate
    visible_kinds = [visible_kinds[i] for i in rng.permutation(n_visible)]
    sources = []
    for kind, position in zip(visible_kinds + kinds[n_visible - duplicate :], positions + [None]):
        silent = position is not None and rng.random() < 0.2
        gain = GAINS[int(rng.integers(len(GAINS)))]
        rate = RATES[int(rng.integers(len(RATES)))]
        sources.append(Source(kind, position, gain, rate, () if silent else _intervals(rng, duration)))
    if duplicate and rng.random() < 0.2:
        twins = [i for i, s in enumerate(sources) if visible_kinds.count(s.instrument) == 2 and s.visible]
        first = sources[twins[0]]
        intervals = first.intervals or _intervals(rng, duration)
        for i in twins:
            sources[i] = Source(
                sources[i].instrument, sources[i].position, sources[i].gain, sources[i].rate, intervals
            )
    if not any(s.sounding for s in sources):
        s = sources[0]
        sources[0] = Source(s.instrument, s.position, s.gain, s.rate, ((0, duration),))
    return Scene(
        video_id, seed, int(duration), (int(size[0]), int(size[1])), int(fps), setting, tuple(sources)
    )


def scene_from_dict(d: dict) -> Scene:
    """The inverse of `Scene.to_dict` (the look and sound are the instrument's, so they are not read back)."""
    sources = tuple(
        Source(
            s["instrument"],
            s["position"],
            s["gain"],
            s["notes_per_second"],
            tuple(map(tuple, s["intervals"])),
        )
        for s in d["sources"]
    )
    size = (d["width"], d["height"])
    return Scene(d["video_id"], d["seed"], d["duration"], size, d["fps"], d["setting"], sources)
