"""Questions about a generated scene, from the real MUSIC-AVQA templates, answers computed from the scene.

`questions_for(scene)` asks every one of the 33 released templates (`templates.TEMPLATES`) that the scene
can answer soundly, once, and skips the rest: about 23 questions per 10-second video. Each question is
{"type": [modality, kind], "template": the released `question_content` (spelling, trailing spaces and
full-width "？" kept), "values": the `templ_values`, "answer"}, the answer one of the 42 MUSIC-AVQA answers
(DESIGN.md §4). A question is asked only where its answer is unique, and yes/no questions are drawn so that
"yes" and "no" are about equally likely. What the templates' words mean for a scene: below the imports.
"""

from __future__ import annotations

import numpy as np

from avaf.extract.synth.scene import NAMES, Scene, fundamental
from avaf.extract.synth.templates import (
    NUMBERS,
    ORDINALS,
    ask,
    beside,
    first_and_last,
    nth_onset,
    ordered_pair,
    overlaps,
    pair_present,
    pick,
    present_or_not,
    types,
    unique,
    yes,
)

Question = dict

# What the words mean here (`scene.py` for the scene model):
# * heard: sounds at some time, visible or off-screen; "in the video": visible; a voiceover: an off-screen
#   instrument that sounds; "this sound is from the instrument in the video": every sounding one is visible.
# * louder: higher gain (RMS while sounding, a factor of 2 or more apart); more rhythmic: more notes per
#   second; playing longer: at least 2 s more sounding time; lowest: lowest fundamental.
# * comes in / first / last / before / after: order of onsets (first sounding second); "the instrument on the
#   left of X" and "the left instrument of the first sounding instrument": the visible instrument(s) on that
#   side of X, asked only when they are of one type; sounds at the same time as X: the one type heard while X
#   sounds; always playing: sounds for the whole video; did not sound from beginning to end: never sounds.
# * unique answers: compared values differ, the first / last / k-th onset is not shared, a named instrument
#   is the only one of its type (except in counting, and in "Which <Object> makes the sound <FL>?", which is
#   about two of a kind and answers "simultaneously" when they start together); before / after X: only one
#   type comes in before (after) X.


def audio_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Audio Counting and Audio Comparative."""
    heard = types(scene.sounding)
    silent = [s.instrument for s in scene.sources if not s.sounding]
    out = [ask("heard", [], NUMBERS[len(scene.sounding)])]
    name, present = present_or_not(rng, heard, silent)
    out.append(ask("sound", [name], yes(present)))
    pair = pair_present(rng, heard, silent)
    out.append(ask("sounds", pair, yes(all(p in heard for p in pair))))
    single = unique(scene, scene.sounding)
    for name, value, margin in (
        ("louder", lambda s: s.gain, 0),
        ("rhythmic", lambda s: s.rate, 0),
        ("longer", lambda s: s.seconds, 1),
    ):
        pairs = [
            (a, b) for i, a in enumerate(single) for b in single[i + 1 :] if abs(value(a) - value(b)) > margin
        ]
        chosen = ordered_pair(rng, pairs)
        if chosen:
            a, b = chosen
            out.append(ask(name, [a.instrument, b.instrument], yes(value(a) > value(b))))
    return out


def _visual_counting(scene: Scene, rng: np.random.Generator) -> list[Question]:
    seen = types(scene.visible)
    unseen = [s.instrument for s in scene.sources if not s.visible]
    kinds = [s.instrument for s in scene.visible]
    twice = [k for k in seen if kinds.count(k) > 1]
    if rng.random() < 0.15:
        name = pick(rng, unseen if unseen and rng.random() < 0.5 else [n for n in NAMES if n not in seen])
    else:
        name = pick(rng, twice if twice and rng.random() < 0.5 else seen)
    out = [ask("how many", [name], NUMBERS[kinds.count(name)]), ask("types seen", [], NUMBERS[len(seen)])]
    pair = pair_present(rng, seen, unseen)
    out.append(ask("both seen", pair, yes(all(p in seen for p in pair))))
    name, present = present_or_not(rng, seen, unseen)
    out.append(ask("seen", [name], yes(present)))
    return out


def _visual_location(scene: Scene, rng: np.random.Generator) -> list[Question]:
    out = [ask("where", [], scene.setting)]
    side = "left" if rng.random() < 0.5 else "right"
    pairs = [(s, beside(scene, s, side)) for s in unique(scene, scene.visible)]
    pairs = [(s, kind) for s, kind in pairs if kind is not None]
    if pairs:
        s, kind = pick(rng, pairs)
        out.append(ask("beside", [side, s.instrument], kind))
    visible = scene.visible  # left to right
    if len(visible) >= 2:
        end = "leftest" if rng.random() < 0.5 else "rightest"
        out.append(ask("end", [end], visible[0 if end == "leftest" else -1].instrument))
    if len(types(visible)) == 1:
        out.append(ask("what", [], visible[0].instrument))
    return out


def visual_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Visual Counting and Visual Location."""
    return _visual_counting(scene, rng) + _visual_location(scene, rng)


def _av_existential(scene: Scene, rng: np.random.Generator) -> list[Question]:
    offscreen = [s for s in scene.sounding if not s.visible]
    out = [ask("voiceover", [], yes(bool(offscreen)))]
    candidates = unique(scene, scene.visible)
    full = [s for s in candidates if s.intervals == ((0, scene.duration),)]
    partial = [s for s in candidates if s not in full]
    pool = (full if rng.random() < 0.65 else partial) if full and partial else full or partial
    if pool:
        s = pick(rng, pool)
        out.append(ask("always", [s.instrument], yes(s in full)))
    out.append(ask("from video", [], yes(not offscreen)))
    return out


def _av_counting(scene: Scene, rng: np.random.Generator) -> list[Question]:
    playing = [s for s in scene.visible if s.sounding]
    seen = types(scene.visible)
    if rng.random() < 0.15:
        offscreen = [s.instrument for s in scene.sources if not s.visible]
        name = pick(rng, offscreen or [n for n in NAMES if n not in seen])
    else:
        name = pick(rng, seen)
    return [
        ask("sounding kind", [name], NUMBERS[sum(s.instrument == name for s in playing)]),
        ask("types sounding", [], NUMBERS[len(types(playing))]),
        ask("never", [], NUMBERS[len(scene.visible) - len(playing)]),
        ask("sounding", [], NUMBERS[len(playing)]),
    ]


def _av_location(scene: Scene, rng: np.random.Generator) -> list[Question]:
    out = []
    together = []  # (a visible sounding instrument, the one type heard while it sounds)
    for s in unique(scene, [s for s in scene.visible if s.sounding]):
        kinds = types([o for o in scene.sounding if o is not s and overlaps(s, o)])
        together += [(s, kinds[0])] if len(kinds) == 1 else []
    if together:
        s, kind = pick(rng, together)
        out.append(ask("together", [s.instrument], kind))
    ends = first_and_last(scene.sounding)
    if ends:
        fl, s = pick(rng, ends)
        others = [v.position for v in scene.visible if v.position != s.position]
        lr = s.position if s.visible and (rng.random() < 0.7 or not others) else pick(rng, others)
        out.append(ask("fl from", [fl, lr], yes(lr == s.position)))
    choices = []
    for ll, key in (("loudest", lambda s: -s.gain), ("lowest", lambda s: fundamental(s.instrument))):
        ranked = sorted(scene.sounding, key=key)
        if ranked[0].visible and (len(ranked) == 1 or key(ranked[0]) != key(ranked[1])):
            choices.append((ll, ranked[0]))
    if choices and len(scene.visible) > 1:
        ll, s = pick(rng, choices)
        out.append(ask("where ll", [ll], s.position))
    side = "left" if rng.random() < 0.5 else "right"
    ends = [(fl, beside(scene, s, side)) for fl, s in ends if s.visible]
    ends = [(fl, kind) for fl, kind in ends if kind is not None]
    if ends:
        fl, kind = pick(rng, ends)
        out.append(ask("beside fl", [side, fl], kind))
    return out


def _av_comparative(scene: Scene, rng: np.random.Generator) -> list[Question]:
    playing = [s for s in scene.visible if s.sounding]
    out = []
    for what, value in (("louder", lambda s: s.gain), ("rhythmic", lambda s: s.rate)):
        pairs = [(a, b) for i, a in enumerate(playing) for b in playing[i + 1 :] if value(a) != value(b)]
        for named in (False, True):
            chosen = ordered_pair(rng, pairs)
            if chosen:
                a, b = chosen
                if named:
                    name, values = f"{what} named", [a.instrument, a.position, b.instrument, b.position]
                else:
                    name, values = f"{what} at", [a.position, b.position]
                out.append(ask(name, values, yes(value(a) > value(b))))
    return out


def _av_temporal(scene: Scene, rng: np.random.Generator) -> list[Question]:
    out = []
    sounding = scene.sounding
    ranks = [(th, nth_onset(sounding, r)) for r, th in enumerate(ORDINALS)]
    ranks = [(th, s) for th, s in ranks if s is not None]
    if ranks:
        th, s = pick(rng, ranks)
        out.append(ask("th", [th], s.instrument))
    ends = [(fl, s) for fl, s in first_and_last(sounding) if s.visible]
    if ends:
        fl, s = pick(rng, ends)
        out.append(ask("where fl", [fl], s.position))
    kinds = [s.instrument for s in scene.sources]
    twins = [k for k in types(scene.visible) if kinds.count(k) == 2]
    if twins and all(s.sounding for s in scene.sources if s.instrument == twins[0]):
        a, b = [s for s in scene.sources if s.instrument == twins[0]]
        fl = "first" if rng.random() < 0.5 else "last"
        earlier, later = sorted((a, b), key=lambda s: s.onset)
        answer = "simultaneously" if a.onset == b.onset else (earlier if fl == "first" else later).position
        out.append(ask("which twin", [twins[0], fl], answer))
    around = []  # (before/after, s, the one type that comes in before/after s)
    for s in unique(scene, sounding):
        before = types([o for o in sounding if o.onset < s.onset])
        after = types([o for o in sounding if o.onset > s.onset])
        around += [(ba, s, k[0]) for ba, k in (("before", before), ("after", after)) if len(k) == 1]
    if around:
        ba, s, kind = pick(rng, around)
        out.append(ask("before after", [ba, s.instrument], kind))
    return out


def audio_visual_questions(scene: Scene, rng: np.random.Generator) -> list[Question]:
    """Audio-Visual Existential, Counting, Location, Comparative and Temporal."""
    parts = (_av_existential, _av_counting, _av_location, _av_comparative, _av_temporal)
    return [q for part in parts for q in part(scene, rng)]


def questions_for(scene: Scene) -> list[Question]:
    """Every template the scene answers soundly, once; a function of the scene alone (seeded by scene.seed)."""
    rng = np.random.default_rng(scene.seed)
    return audio_questions(scene, rng) + visual_questions(scene, rng) + audio_visual_questions(scene, rng)
