"""Questions about a synthetic scene, from the real MUSIC-AVQA templates, with answers computed from the scene.

`questions_for(scene)` asks every template the scene can answer soundly, once, and skips the rest. Each
question is {"type": [modality, kind], "template": the released `question_content` (spelling, trailing spaces
and full-width "？" kept), "values": the `templ_values`, "answer"}, the answer one of the 42 MUSIC-AVQA answers.

What the words mean here (see `synth_scene` for the scene model):

* heard: sounds at some time, visible or off-screen; "in the video": visible; a voiceover: an off-screen
  instrument that sounds; "this sound is from the instrument in the video": every sounding instrument is visible.
* louder: higher gain (RMS while sounding, a factor of 2 or more apart); more rhythmic: more notes per second;
  playing longer: at least 2 s more sounding time; lowest: lowest fundamental.
* comes in / first / last / before / after: order of onsets (first sounding second); "the instrument on the left
  of X" and "the left instrument of X": the nearest visible instrument on that side of X; always playing:
  sounds for the whole video; did not sound from beginning to end: never sounds.

A question is asked only where its answer is unique: compared values differ, the first / last / k-th onset is
not shared, a named instrument is the only one of its type (except in counting, and in "Which <Object> makes
the sound <FL>?", which is about two of a kind and answers "simultaneously" when they start together).
Yes/no questions and the instruments they name are drawn so that "yes" and "no" are about equally likely.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from avaf.shared.answers import answer_index

from .synth_scene import NAMES, POSITIONS, Scene, Source, fundamental

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
ORDINALS = ("first", "second", "third", "fourth")
Question = dict


def _q(modality: str, kind: str, template: str, values: list[str], answer: str) -> Question:
    answer_index(answer, where=f"synthetic question {template!r} {values}")
    return {"type": [modality, kind], "template": template, "values": list(values), "answer": answer}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _pick(rng: np.random.Generator, items) -> object:
    items = list(items)
    return items[int(rng.integers(len(items)))]


def _types(sources: list[Source]) -> list[str]:
    """Distinct instrument types, in order of first appearance."""
    return list(dict.fromkeys(s.instrument for s in sources))


def _unique(scene: Scene, sources: list[Source]) -> list[Source]:
    """The sources whose type appears once in the whole scene (so naming the type names the source)."""
    every = [s.instrument for s in scene.sources]
    return [s for s in sources if every.count(s.instrument) == 1]


def _present_or_not(rng: np.random.Generator, present: list[str], hard: list[str]) -> tuple[str, bool]:
    """A type that is present (half the time) or not; a "not" prefers the scene's `hard` distractors."""
    if present and rng.random() < 0.5:
        return _pick(rng, present), True
    absent = [n for n in hard if n not in present]
    if not absent or rng.random() < 0.5:
        absent = [n for n in NAMES if n not in present]
    return _pick(rng, absent), False


def _pair_present(rng: np.random.Generator, present: list[str], hard: list[str]) -> list[str]:
    """Two distinct types: both present 3/4 of the time when two are (so about half overall), else one absent."""
    if len(present) >= 2 and rng.random() < 0.75:
        return [present[i] for i in rng.choice(len(present), 2, replace=False)]
    first, _ = _present_or_not(rng, present, hard)
    others = [n for n in NAMES if n != first and n not in present] if first in present else present
    second = _pick(rng, others or [n for n in NAMES if n != first])
    return [first, second] if rng.random() < 0.5 else [second, first]


def _nth_onset(sources: list[Source], rank: int) -> Source | None:
    """The source that comes in rank-th (0: first, -1: last), when that is unambiguous.

    The last: its onset is shared with no other source. The rank-th: the onsets up to it are all different
    and the next one differs from it (with onsets 0, 0, 3 no source is "second" or "third").
    """
    ordered = sorted(sources, key=lambda s: s.onset)
    onsets = [s.onset for s in ordered]
    if not ordered or rank >= len(ordered):
        return None
    if rank < 0:
        return ordered[-1] if onsets.count(onsets[-1]) == 1 else None
    if len(set(onsets[: rank + 1])) < rank + 1 or onsets[rank + 1 : rank + 2] == [onsets[rank]]:
        return None
    return ordered[rank]


def _beside(scene: Scene, source: Source, side: str) -> str | None:
    """The type of the visible instruments on `side` ("left" / "right") of a visible one, when there is one type."""
    here = POSITIONS.index(source.position)
    there = [
        s
        for s in scene.visible
        if (POSITIONS.index(s.position) < here) == (side == "left") and s is not source
    ]
    kinds = _types(there)
    return kinds[0] if len(kinds) == 1 else None


def _compare(rng: np.random.Generator, pairs: list[tuple[Source, Source]]) -> tuple[Source, Source] | None:
    if not pairs:
        return None
    a, b = _pick(rng, pairs)
    return (a, b) if rng.random() < 0.5 else (b, a)


def audio_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Audio Counting and Audio Comparative."""
    heard = _types(scene.sounding)
    silent = [s.instrument for s in scene.sources if not s.sounding]
    out = [_q("Audio", "Counting", "How many musical instruments were heard throughout the video?", [],
              NUMBERS[len(scene.sounding)])]  # fmt: skip
    name, present = _present_or_not(rng, heard, silent)
    out.append(_q("Audio", "Counting", "Is there a <Object> sound?", [name], _yes(present)))
    pair = _pair_present(rng, heard, silent)
    out.append(_q("Audio", "Counting", "Are there <Object> and <Object> sound? ", pair,
                  _yes(all(p in heard for p in pair))))  # fmt: skip
    single = _unique(scene, scene.sounding)
    tests = (
        ("Is the <Object> louder than the <Object>?", lambda s: s.gain, 0),
        ("Is the <Object> more rhythmic than the <Object>?", lambda s: s.rate, 0),
        ("Is the <Object> playing longer than the <Object>?", lambda s: s.seconds, 1),
    )
    for template, value, margin in tests:
        pairs = [
            (a, b) for i, a in enumerate(single) for b in single[i + 1 :] if abs(value(a) - value(b)) > margin
        ]
        chosen = _compare(rng, pairs)
        if chosen:
            a, b = chosen
            out.append(
                _q("Audio", "Comparative", template, [a.instrument, b.instrument], _yes(value(a) > value(b)))
            )
    return out


def _visual_counting(scene: Scene, rng: np.random.Generator) -> list[Question]:
    seen = _types(scene.visible)
    unseen = [s.instrument for s in scene.sources if not s.visible]
    kinds = [s.instrument for s in scene.visible]
    twice = [k for k in seen if kinds.count(k) > 1]
    if rng.random() < 0.15:
        name = _pick(rng, unseen if unseen and rng.random() < 0.5 else [n for n in NAMES if n not in seen])
    else:
        name = _pick(rng, twice if twice and rng.random() < 0.5 else seen)
    out = [
        _q(
            "Visual",
            "Counting",
            "How many <Object> are in the entire video?",
            [name],
            NUMBERS[kinds.count(name)],
        )
    ]
    out.append(_q("Visual", "Counting", "How many types of musical instruments appeared in the entire video?", [],
                  NUMBERS[len(seen)]))  # fmt: skip
    pair = _pair_present(rng, seen, unseen)
    out.append(_q("Visual", "Counting", "Are there <Object> and <Object> instruments in the video?", pair,
                  _yes(all(p in seen for p in pair))))  # fmt: skip
    name, present = _present_or_not(rng, seen, unseen)
    out.append(_q("Visual", "Counting", "Is there a <Object> in the entire video?", [name], _yes(present)))
    return out


def _visual_location(scene: Scene, rng: np.random.Generator) -> list[Question]:
    out = [_q("Visual", "Location", "Where is the performance?", [], scene.setting)]
    side = "left" if rng.random() < 0.5 else "right"
    pairs = [(s, _beside(scene, s, side)) for s in _unique(scene, scene.visible)]
    pairs = [(s, kind) for s, kind in pairs if kind is not None]
    if pairs:
        s, kind = _pick(rng, pairs)
        out.append(_q("Visual", "Location", "What is the instrument on the <LR> of <Object>?", [side, s.instrument],
                      kind))  # fmt: skip
    visible = scene.visible  # left to right
    if len(visible) >= 2:
        end = "leftest" if rng.random() < 0.5 else "rightest"
        source = visible[0] if end == "leftest" else visible[-1]
        out.append(_q("Visual", "Location", "What kind of instrument is the <LRer> instrument? ", [end],
                      source.instrument))  # fmt: skip
    if len(_types(visible)) == 1:
        out.append(
            _q("Visual", "Location", "What kind of musical instrument is it?", [], visible[0].instrument)
        )
    return out


def visual_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Visual Counting and Visual Location."""
    return _visual_counting(scene, rng) + _visual_location(scene, rng)


def _av_existential_counting(scene: Scene, rng: np.random.Generator) -> list[Question]:
    offscreen = [s for s in scene.sounding if not s.visible]
    out = [_q("Audio-Visual", "Existential", "Is there a voiceover?", [], _yes(bool(offscreen)))]
    candidates = _unique(scene, scene.visible)
    full = [s for s in candidates if s.intervals == ((0, scene.duration),)]
    partial = [s for s in candidates if s not in full]
    pool = (full if rng.random() < 0.65 else partial) if full and partial else full or partial
    if pool:
        s = _pick(rng, pool)
        out.append(_q("Audio-Visual", "Existential", "Is the <Object> in the video always playing?", [s.instrument],
                      _yes(s in full)))  # fmt: skip
    out.append(_q("Audio-Visual", "Existential", "Is this sound from the instrument in the video?", [],
                  _yes(not offscreen)))  # fmt: skip
    playing = [s for s in scene.visible if s.sounding]
    seen = _types(scene.visible)
    if rng.random() < 0.15:
        name = _pick(rng, [s.instrument for s in offscreen] or [n for n in NAMES if n not in seen])
    else:
        name = _pick(rng, seen)
    count = sum(s.instrument == name for s in playing)
    out.append(
        _q("Audio-Visual", "Counting", "How many sounding <Object> in the video？", [name], NUMBERS[count])
    )
    out.append(_q("Audio-Visual", "Counting", "How many types of musical instruments sound in the video?", [],
                  NUMBERS[len(_types(playing))]))  # fmt: skip
    out.append(_q("Audio-Visual", "Counting", "How many instruments in the video did not sound from beginning to end?",
                  [], NUMBERS[len(scene.visible) - len(playing)]))  # fmt: skip
    out.append(_q("Audio-Visual", "Counting", "How many instruments are sounding in the video?", [],
                  NUMBERS[len(playing)]))  # fmt: skip
    return out


def _overlaps(a: Source, b: Source) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in a.intervals for s2, e2 in b.intervals)


def _av_location(scene: Scene, rng: np.random.Generator) -> list[Question]:
    out = []
    together = []
    for s in _unique(scene, [s for s in scene.visible if s.sounding]):
        kinds = _types([o for o in scene.sounding if o is not s and _overlaps(s, o)])
        if len(kinds) == 1:
            together.append((s, kinds[0]))
    if together:
        s, kind = _pick(rng, together)
        out.append(_q("Audio-Visual", "Location",
                      "Which is the musical instrument that sounds at the same time as the <Object>?", [s.instrument],
                      kind))  # fmt: skip
    ends = [
        (fl, _nth_onset(scene.sounding, r))
        for fl, r in (("first", 0), ("last", -1))
        if len(scene.sounding) > 1
    ]
    ends = [(fl, s) for fl, s in ends if s is not None]
    if ends and scene.visible:
        fl, s = _pick(rng, ends)
        others = [v.position for v in scene.visible if v.position != s.position]
        lr = s.position if s.visible and (rng.random() < 0.7 or not others) else _pick(rng, others)
        out.append(_q("Audio-Visual", "Location", "Is the <FL> sound coming from the <LR> instrument?", [fl, lr],
                      _yes(lr == s.position)))  # fmt: skip
    extremes = {"loudest": lambda s: -s.gain, "lowest": lambda s: fundamental(s.instrument)}
    choices = []
    for ll, key in extremes.items():
        ranked = sorted(scene.sounding, key=key)
        if ranked[0].visible and (len(ranked) == 1 or key(ranked[0]) != key(ranked[1])):
            choices.append((ll, ranked[0]))
    if choices and len(scene.visible) > 1:
        ll, s = _pick(rng, choices)
        out.append(_q("Audio-Visual", "Location", "Where is the <LL> instrument?", [ll], s.position))
    side = "left" if rng.random() < 0.5 else "right"
    ends = [(fl, _beside(scene, s, side)) for fl, s in ends if s.visible]
    ends = [(fl, kind) for fl, kind in ends if kind is not None]
    if ends:
        fl, kind = _pick(rng, ends)
        out.append(_q("Audio-Visual", "Location", "What is the <LR> instrument of the <FL> sounding instrument?",
                      [side, fl], kind))  # fmt: skip
    return out


def _av_comparative(scene: Scene, rng: np.random.Generator) -> list[Question]:
    playing = [s for s in scene.visible if s.sounding]
    out = []
    for what, value in (("louder", lambda s: s.gain), ("more rhythmic", lambda s: s.rate)):
        pairs = [(a, b) for i, a in enumerate(playing) for b in playing[i + 1 :] if value(a) != value(b)]
        for named in (False, True):
            chosen = _compare(rng, pairs)
            if not chosen:
                continue
            a, b = chosen
            answer = _yes(value(a) > value(b))
            if named:
                template = f"Is the <Object> on the <LR> {what} than the <Object> on the <LR>?"
                values = [a.instrument, a.position, b.instrument, b.position]
            else:
                template = f"Is the instrument on the <LR> {what} than the instrument on the <LR>?"
                values = [a.position, b.position]
            out.append(_q("Audio-Visual", "Comparative", template, values, answer))
    return out


def _av_temporal(scene: Scene, rng: np.random.Generator) -> list[Question]:
    out = []
    sounding = scene.sounding
    ranks = (
        [(th, _nth_onset(sounding, r)) for r, th in enumerate(ORDINALS[: len(sounding)])]
        if len(sounding) > 1
        else []
    )
    ranks = [(th, s) for th, s in ranks if s is not None]
    if ranks:
        th, s = _pick(rng, ranks)
        out.append(
            _q("Audio-Visual", "Temporal", "What is the <TH> instrument that comes in?", [th], s.instrument)
        )
    ends = (
        [(fl, _nth_onset(sounding, r)) for fl, r in (("first", 0), ("last", -1))] if len(sounding) > 1 else []
    )
    ends = [(fl, s) for fl, s in ends if s is not None and s.visible]
    if ends:
        fl, s = _pick(rng, ends)
        out.append(_q("Audio-Visual", "Temporal", "Where is the <FL> sounding instrument?", [fl], s.position))
    kinds = [s.instrument for s in scene.sources]
    twins = [k for k in _types(scene.visible) if kinds.count(k) == 2]
    if twins and all(s.sounding for s in scene.sources if s.instrument == twins[0]):
        a, b = [s for s in scene.sources if s.instrument == twins[0]]
        fl = "first" if rng.random() < 0.5 else "last"
        if a.onset == b.onset:
            answer = "simultaneously"
        else:
            answer = (min if fl == "first" else max)((a, b), key=lambda s: s.onset).position
        out.append(
            _q("Audio-Visual", "Temporal", "Which <Object> makes the sound <FL>?", [twins[0], fl], answer)
        )
    around = []  # (before/after, s, the one type that comes in before/after s)
    for s in _unique(scene, sounding):
        before = _types([o for o in sounding if o.onset < s.onset])
        after = _types([o for o in sounding if o.onset > s.onset])
        around += [
            (ba, s, kinds[0]) for ba, kinds in (("before", before), ("after", after)) if len(kinds) == 1
        ]
    if around:
        ba, s, kind = _pick(rng, around)
        out.append(_q("Audio-Visual", "Temporal", "Which instrument makes sounds <BA> the <Object>?", [ba, s.instrument],
                      kind))  # fmt: skip
    return out


def audio_visual_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Audio-Visual Existential, Counting, Location, Comparative and Temporal."""
    parts: list[Callable] = [_av_existential_counting, _av_location, _av_comparative, _av_temporal]
    return [q for part in parts for q in part(scene, rng)]


def questions_for(scene: Scene) -> list[Question]:
    """Every template the scene answers soundly, once; a function of the scene alone (seeded by scene.seed)."""
    rng = np.random.default_rng(scene.seed)
    return audio_questions(scene, rng) + visual_questions(scene, rng) + audio_visual_questions(scene, rng)
