"""The 33 MUSIC-AVQA question templates, and the helpers `questions.py` asks them with.

`TEMPLATES` maps a short name to (modality, kind, question_content) with `question_content` spelled exactly as
in the released json_update files (trailing spaces and the full-width "？" included), so the generated
questions are the real ones. The helpers read a `scene.Scene`: which types are present, who comes in first,
what stands beside whom, each returning None where the answer would be ambiguous.
"""

from __future__ import annotations

import numpy as np

from avaf.extract.synth.scene import NAMES, POSITIONS, Scene, Source
from avaf.shared.avqa.answers import answer_index

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
ORDINALS = ("first", "second", "third", "fourth")

A, V, AV = "Audio", "Visual", "Audio-Visual"
TEMPLATES: dict[str, tuple[str, str, str]] = {
    "heard": (A, "Counting", "How many musical instruments were heard throughout the video?"),
    "sound": (A, "Counting", "Is there a <Object> sound?"),
    "sounds": (A, "Counting", "Are there <Object> and <Object> sound? "),
    "louder": (A, "Comparative", "Is the <Object> louder than the <Object>?"),
    "rhythmic": (A, "Comparative", "Is the <Object> more rhythmic than the <Object>?"),
    "longer": (A, "Comparative", "Is the <Object> playing longer than the <Object>?"),
    "how many": (V, "Counting", "How many <Object> are in the entire video?"),
    "types seen": (V, "Counting", "How many types of musical instruments appeared in the entire video?"),
    "both seen": (V, "Counting", "Are there <Object> and <Object> instruments in the video?"),
    "seen": (V, "Counting", "Is there a <Object> in the entire video?"),
    "beside": (V, "Location", "What is the instrument on the <LR> of <Object>?"),
    "where": (V, "Location", "Where is the performance?"),
    "end": (V, "Location", "What kind of instrument is the <LRer> instrument? "),
    "what": (V, "Location", "What kind of musical instrument is it?"),
    "voiceover": (AV, "Existential", "Is there a voiceover?"),
    "always": (AV, "Existential", "Is the <Object> in the video always playing?"),
    "from video": (AV, "Existential", "Is this sound from the instrument in the video?"),
    "sounding kind": (AV, "Counting", "How many sounding <Object> in the video？"),
    "types sounding": (AV, "Counting", "How many types of musical instruments sound in the video?"),
    "never": (AV, "Counting", "How many instruments in the video did not sound from beginning to end?"),
    "sounding": (AV, "Counting", "How many instruments are sounding in the video?"),
    "together": (
        AV,
        "Location",
        "Which is the musical instrument that sounds at the same time as the <Object>?",
    ),
    "fl from": (AV, "Location", "Is the <FL> sound coming from the <LR> instrument?"),
    "where ll": (AV, "Location", "Where is the <LL> instrument?"),
    "beside fl": (AV, "Location", "What is the <LR> instrument of the <FL> sounding instrument?"),
    "louder at": (AV, "Comparative", "Is the instrument on the <LR> louder than the instrument on the <LR>?"),
    "louder named": (AV, "Comparative", "Is the <Object> on the <LR> louder than the <Object> on the <LR>?"),
    "rhythmic at": (
        AV,
        "Comparative",
        "Is the instrument on the <LR> more rhythmic than the instrument on the <LR>?",
    ),
    "rhythmic named": (
        AV,
        "Comparative",
        "Is the <Object> on the <LR> more rhythmic than the <Object> on the <LR>?",
    ),
    "th": (AV, "Temporal", "What is the <TH> instrument that comes in?"),
    "where fl": (AV, "Temporal", "Where is the <FL> sounding instrument?"),
    "which twin": (AV, "Temporal", "Which <Object> makes the sound <FL>?"),
    "before after": (AV, "Temporal", "Which instrument makes sounds <BA> the <Object>?"),
}


def ask(name: str, values: list[str], answer: str) -> dict:
    """A question of template `name`; an answer outside the 42 is an error, never a silent new class."""
    modality, kind, template = TEMPLATES[name]
    answer_index(answer, where=f"synthetic question {template!r} {values}")
    return {"type": [modality, kind], "template": template, "values": list(values), "answer": answer}


def yes(flag: bool) -> str:
    return "yes" if flag else "no"


def pick(rng: np.random.Generator, items) -> object:
    """One of `items`, uniformly."""
    items = list(items)
    return items[int(rng.integers(len(items)))]


def types(sources: list[Source]) -> list[str]:
    """Distinct instrument types, in order of first appearance."""
    return list(dict.fromkeys(s.instrument for s in sources))


def unique(scene: Scene, sources: list[Source]) -> list[Source]:
    """The sources whose type appears once in the whole scene (so naming the type names the source)."""
    every = [s.instrument for s in scene.sources]
    return [s for s in sources if every.count(s.instrument) == 1]


def present_or_not(rng: np.random.Generator, present: list[str], hard: list[str]) -> tuple[str, bool]:
    """A type that is present (half the time) or not; a "not" is one of the scene's `hard` ones half the time."""
    if present and rng.random() < 0.5:
        return pick(rng, present), True
    absent = [n for n in hard if n not in present]
    if not absent or rng.random() < 0.5:
        absent = [n for n in NAMES if n not in present]
    return pick(rng, absent), False


def pair_present(rng: np.random.Generator, present: list[str], hard: list[str]) -> list[str]:
    """Two distinct types: both present 3/4 of the time when two are (about half overall), else one absent."""
    if len(present) >= 2 and rng.random() < 0.75:
        return [present[i] for i in rng.choice(len(present), 2, replace=False)]
    first, _ = present_or_not(rng, present, hard)
    others = [n for n in NAMES if n != first and n not in present] if first in present else present
    second = pick(rng, others or [n for n in NAMES if n != first])
    return [first, second] if rng.random() < 0.5 else [second, first]


def nth_onset(sources: list[Source], rank: int) -> Source | None:
    """The source that comes in rank-th (0: first, -1: last), when that is unambiguous.

    The last: its onset is shared with no other source. The rank-th: the onsets up to it are all different
    and the next one differs from it (with onsets 0, 0, 3 no source is "second" or "third").
    """
    ordered = sorted(sources, key=lambda s: s.onset)
    onsets = [s.onset for s in ordered]
    if len(ordered) < 2 or rank >= len(ordered):
        return None
    if rank < 0:
        return ordered[-1] if onsets.count(onsets[-1]) == 1 else None
    if len(set(onsets[: rank + 1])) < rank + 1 or onsets[rank + 1 : rank + 2] == [onsets[rank]]:
        return None
    return ordered[rank]


def first_and_last(sources: list[Source]) -> list[tuple[str, Source]]:
    """("first", source) and ("last", source) where those are unambiguous (two or more sources)."""
    ends = [("first", nth_onset(sources, 0)), ("last", nth_onset(sources, -1))]
    return [(fl, s) for fl, s in ends if s is not None]


def beside(scene: Scene, source: Source, side: str) -> str | None:
    """The type of the visible instruments on `side` ("left" / "right") of a visible one, if there is one type."""
    here = POSITIONS.index(source.position)
    on_side = lambda s: (POSITIONS.index(s.position) < here) == (side == "left")
    kinds = types([s for s in scene.visible if s is not source and on_side(s)])
    return kinds[0] if len(kinds) == 1 else None


def ordered_pair(
    rng: np.random.Generator, pairs: list[tuple[Source, Source]]
) -> tuple[Source, Source] | None:
    """One of the pairs, in a random order (so "is a more ... than b" is "yes" half the time)."""
    if not pairs:
        return None
    a, b = pick(rng, pairs)
    return (a, b) if rng.random() < 0.5 else (b, a)


def overlaps(a: Source, b: Source) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in a.intervals for s2, e2 in b.intervals)
