"""Tests of the synthetic AVQA set (extract/synth*.py): answers against an independent reading of each scene,
real decodable files whose pixels and sound are where the scene says, loadable annotations, determinism."""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from avaf.extract.cli import demo as demo_main
from avaf.extract.synth.cli import main
from avaf.extract.synth.generate import SynthSpec, generate, split_sizes, video_scene
from avaf.extract.synth.questions import questions_for
from avaf.extract.synth.render import write_video
from avaf.extract.synth.scene import INSTRUMENTS, Scene, Source, make_scene, scene_from_dict
from avaf.shared.avqa.annotations import is_real_video, load_annotations
from avaf.shared.avqa.answers import ANSWERS

REAL_TEST = Path(__file__).parent / "data" / "music-avqa" / "json_update" / "avqa-test.json"
NUMBER = ["zero", "one", "two", "three", "four", "five"]
SIDES = ["left", "middle", "right"]
SMALL = SynthSpec(videos=5, seed=0, seconds=(4, 6), size=(160, 120), fps=8)


# ---- an independent reading of a scene: from its scenes.json dict, not the generator's Source/Scene helpers ---


def _only(items):
    assert len(set(items)) == 1, f"the question is ambiguous: {items}"
    return items[0]


def _single(sources, what):
    assert len(sources) == 1, f"not exactly one {what}: {sources}"
    return sources[0]


def _by_onset_rank(sounding, rank):
    """The source whose entry is the rank-th distinct entry time ("last": the last), when it enters alone
    and (for a rank) so did every source before it."""
    times = sorted({s["intervals"][0][0] for s in sounding})
    entering = [[s for s in sounding if s["intervals"][0][0] == t] for t in times]
    if rank == "last":
        return _single(entering[-1], "last entry")
    assert all(len(e) == 1 for e in entering[: rank + 1]), f"ambiguous rank {rank}: {entering}"
    return entering[rank][0]


def _side_kind(visible, source, side):
    here = SIDES.index(source["position"])
    there = [
        s for s in visible if s is not source and (SIDES.index(s["position"]) < here) == (side == "left")
    ]
    return _only([s["instrument"] for s in there])


def _yes(flag):
    return "yes" if flag else "no"


def _fl(x):
    """The onset rank of <FL>: "first" is rank 0; "last" stays "last"."""
    return 0 if x == "first" else "last"


def _secs(s):
    """The seconds in which source s sounds."""
    return {t for a, b in s["intervals"] for t in range(a, b)}


def _longer(a, b):
    assert abs(len(_secs(a)) - len(_secs(b))) >= 2, "too close to call"
    return _yes(len(_secs(a)) > len(_secs(b)))


class _Reading:
    """What the rules read off a scene dict: its visible sources left to right, its sounding ones, the kinds
    heard and seen; and the question's template and values."""

    def __init__(self, d: dict, q: dict):
        self.d, self.v, self.t = d, q["values"], q["template"]
        self.src = d["sources"]
        self.vis = sorted((s for s in self.src if s["visible"]), key=lambda s: SIDES.index(s["position"]))
        self.snd = [s for s in self.src if s["intervals"]]
        self.heard, self.seen = {s["instrument"] for s in self.snd}, {s["instrument"] for s in self.vis}

    def one(self, kind):
        """The only source of this kind."""
        return _single([s for s in self.src if s["instrument"] == kind], kind)

    def at(self, pos):
        """The only visible source at this position."""
        return _single([s for s in self.vis if s["position"] == pos], pos)

    def bigger(self, key, a, b):
        """Whether key(a) > key(b); a tie fails the test."""
        return _yes(key(a) > key(b)) if key(a) != key(b) else pytest.fail(f"a tie: {self.t} {self.v}")


def _audio_rules(r: _Reading) -> dict:
    """Audio questions (counting, comparative): what is heard."""
    v, one = r.v, r.one
    return {
        "How many musical instruments were heard throughout the video?": lambda: NUMBER[len(r.snd)],
        "Is there a <Object> sound?": lambda: _yes(v[0] in r.heard),
        "Are there <Object> and <Object> sound? ": lambda: _yes(v[0] in r.heard and v[1] in r.heard),
        "Is the <Object> louder than the <Object>?": lambda: r.bigger(
            lambda s: s["gain"], one(v[0]), one(v[1])
        ),
        "Is the <Object> more rhythmic than the <Object>?": lambda: r.bigger(
            lambda s: s["notes_per_second"], one(v[0]), one(v[1])
        ),
        "Is the <Object> playing longer than the <Object>?": lambda: _longer(one(v[0]), one(v[1])),
    }


def _visual_rules(r: _Reading) -> dict:
    """Visual questions (counting, location): what is seen."""
    v, vis = r.v, r.vis
    return {
        "How many <Object> are in the entire video?": lambda: NUMBER[
            sum(s["instrument"] == v[0] for s in vis)
        ],
        "How many types of musical instruments appeared in the entire video?": lambda: NUMBER[len(r.seen)],
        "Are there <Object> and <Object> instruments in the video?": lambda: _yes(
            v[0] in r.seen and v[1] in r.seen
        ),
        "Is there a <Object> in the entire video?": lambda: _yes(v[0] in r.seen),
        "Where is the performance?": lambda: r.d["setting"],
        "What is the instrument on the <LR> of <Object>?": lambda: _side_kind(vis, r.one(v[1]), v[0]),
        "What kind of instrument is the <LRer> instrument? ": lambda: vis[0 if v[0] == "leftest" else -1][
            "instrument"
        ],
        "What kind of musical instrument is it?": lambda: _only([s["instrument"] for s in vis]),
    }


def _audio_visual_existential_and_counting_rules(r: _Reading) -> dict:
    """Audio-visual existential and counting questions: which of the seen sources sound, and when."""
    v, vis, snd = r.v, r.vis, r.snd
    return {
        "Is there a voiceover?": lambda: _yes(any(not s["visible"] for s in snd)),
        "Is the <Object> in the video always playing?": lambda: _yes(
            _secs(r.one(v[0])) == set(range(r.d["duration"]))
        ),
        "Is this sound from the instrument in the video?": lambda: _yes(all(s["visible"] for s in snd)),
        "How many sounding <Object> in the video？": lambda: NUMBER[
            sum(s["instrument"] == v[0] and bool(s["intervals"]) for s in vis)
        ],
        "How many types of musical instruments sound in the video?": lambda: NUMBER[
            len({s["instrument"] for s in vis if s["intervals"]})
        ],
        "How many instruments in the video did not sound from beginning to end?": lambda: NUMBER[
            sum(not s["intervals"] for s in vis)
        ],
        "How many instruments are sounding in the video?": lambda: NUMBER[
            sum(bool(s["intervals"]) for s in vis)
        ],
    }


def _audio_visual_location_rules(r: _Reading) -> dict:
    """Audio-visual location questions: where a sound comes from, what sounds with or beside what."""
    v, snd = r.v, r.snd
    return {
        "Which is the musical instrument that sounds at the same time as the <Object>?": lambda: _only(
            [s["instrument"] for s in snd if s is not r.one(v[0]) and _secs(s) & _secs(r.one(v[0]))]
        ),
        "Is the <FL> sound coming from the <LR> instrument?": lambda: _yes(
            _by_onset_rank(snd, _fl(v[0]))["position"] == v[1]
        ),
        "Where is the <LL> instrument?": lambda: _where_extreme(snd, v[0]),
        "What is the <LR> instrument of the <FL> sounding instrument?": lambda: _side_kind(
            r.vis, _by_onset_rank(snd, _fl(v[1])), v[0]
        ),
    }


def _audio_visual_comparative_rules(r: _Reading) -> dict:
    """Audio-visual comparative questions: louder or more rhythmic, of the sources at two positions."""
    v, at, rules = r.v, r.at, {}
    for what, key in (("louder", "gain"), ("more rhythmic", "notes_per_second")):
        rules[f"Is the instrument on the <LR> {what} than the instrument on the <LR>?"] = lambda key=key: (
            r.bigger(lambda s: s[key], at(v[0]), at(v[1]))
        )
        rules[f"Is the <Object> on the <LR> {what} than the <Object> on the <LR>?"] = lambda key=key: (
            r.bigger(lambda s: s[key], at(v[1]), at(v[3]))
            if [at(v[1])["instrument"], at(v[3])["instrument"]] == [v[0], v[2]]
            else pytest.fail("misnamed")
        )
    return rules


def _audio_visual_temporal_rules(r: _Reading) -> dict:
    """Audio-visual temporal questions: the order in which the sources come in."""
    v, snd = r.v, r.snd
    return {
        "What is the <TH> instrument that comes in?": lambda: _by_onset_rank(
            snd, ["first", "second", "third", "fourth"].index(v[0])
        )["instrument"],
        "Where is the <FL> sounding instrument?": lambda: _by_onset_rank(snd, _fl(v[0]))["position"],
        "Which <Object> makes the sound <FL>?": lambda: _which_twin(r.vis, v[0], v[1]),
        "Which instrument makes sounds <BA> the <Object>?": lambda: _only(
            [
                s["instrument"]
                for s in snd
                if (s["intervals"][0][0] - r.one(v[1])["intervals"][0][0]) * (1 if v[0] == "after" else -1)
                > 0
            ]
        ),
    }


FAMILIES = (
    _audio_rules,
    _visual_rules,
    _audio_visual_existential_and_counting_rules,
    _audio_visual_location_rules,
    _audio_visual_comparative_rules,
    _audio_visual_temporal_rules,
)


def expected_answer(d: dict, q: dict) -> str:
    """The answer to q read off the scene dict: one rule per template, in one table per question family."""
    r = _Reading(d, q)
    rules = {}
    for family in FAMILIES:
        rules |= family(r)
    return rules[r.t]()


def _where_extreme(snd, which):
    key = (lambda s: -s["gain"]) if which == "loudest" else (lambda s: s["f0_hz"])
    best = min(key(s) for s in snd)
    winner = _single([s for s in snd if key(s) == best], which)
    assert winner["visible"]
    return winner["position"]


def _which_twin(vis, kind, fl):
    a, b = [s for s in vis if s["instrument"] == kind]
    if a["intervals"][0][0] == b["intervals"][0][0]:
        return "simultaneously"
    pick = min if fl == "first" else max
    return pick((a, b), key=lambda s: s["intervals"][0][0])["position"]


# ---- answers ----------------------------------------------------------------------------------------------


def test_a_hand_built_scene_gets_the_hand_computed_answers():
    scene = Scene(
        "00000042",
        5,
        10,
        (224, 224),
        8,
        "indoor",
        (
            Source("violin", "left", 0.16, 1, ((0, 10),)),
            Source("piano", "right", 0.04, 4, ((3, 6),)),
            Source("flute", None, 0.08, 2, ((5, 8),)),
        ),
    )
    got = {(q["template"], tuple(q["values"])): q["answer"] for q in questions_for(scene)}
    fixed = {
        "How many musical instruments were heard throughout the video?": "three",
        "How many types of musical instruments appeared in the entire video?": "two",
        "Where is the performance?": "indoor",
        "Is there a voiceover?": "yes",
        "Is this sound from the instrument in the video?": "no",
        "How many instruments are sounding in the video?": "two",
        "How many instruments in the video did not sound from beginning to end?": "zero",
    }
    for template, answer in fixed.items():
        assert got[(template, ())] == answer
    entries = {"first": "violin", "second": "piano", "third": "flute"}
    th = [(v, a) for (t, v), a in got.items() if t == "What is the <TH> instrument that comes in?"]
    assert len(th) == 1 and th[0][1] == entries[th[0][0][0]]
    louder = {("violin", "piano"): "yes", ("piano", "violin"): "no", ("violin", "flute"): "yes"}
    louder |= {("flute", "violin"): "no", ("piano", "flute"): "no", ("flute", "piano"): "yes"}
    loud = [(v, a) for (t, v), a in got.items() if t == "Is the <Object> louder than the <Object>?"]
    assert len(loud) == 1 and loud[0][1] == louder[loud[0][0]]
    assert got[("Where is the performance?", ())] == "indoor"
    assert sum(t == "Which <Object> makes the sound <FL>?" for t, _ in got) == 0  # no two of a kind


def test_answers_agree_with_an_independent_reading_of_300_scenes():
    checked, templates = 0, set()
    for i in range(300):
        scene = make_scene(np.random.default_rng([99, i]), duration=int(3 + i % 8))
        described = json.loads(json.dumps(scene.to_dict()))
        assert scene_from_dict(described) == scene
        for q in questions_for(scene):
            assert q["answer"] == expected_answer(described, q), (described, q)
            templates.add(q["template"])
            checked += 1
    real = {row["question_content"] for row in json.loads(REAL_TEST.read_text(encoding="utf-8"))}
    assert len(templates) == 33 and templates <= real  # every released template, spelled as released
    assert checked > 300 * 15


def test_answers_are_in_the_vocabulary_and_yes_no_is_balanced():
    answers = defaultdict(Counter)
    for i in range(400):
        for q in questions_for(video_scene(0, i, (10, 10), (224, 224), 8)):
            answers[q["template"]][q["answer"]] += 1
    assert {a for c in answers.values() for a in c} <= set(ANSWERS)
    yes_no = {t: c for t, c in answers.items() if set(c) <= {"yes", "no"}}
    assert len(yes_no) == 15
    for template, count in yes_no.items():
        share = count["yes"] / sum(count.values())
        assert 0.3 < share < 0.7, (template, count)
    assert answers["Which <Object> makes the sound <FL>?"]["simultaneously"] > 0
    assert set(answers["How many musical instruments were heard throughout the video?"]) == set(NUMBER[1:5])


# ---- the files ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return out, generate(out, SMALL, workers=1)


def _frames(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        duration = float(c.duration / av.time_base)
        frames = [(f.time, f.to_ndarray(format="rgb24")) for f in c.decode(stream)]
    return duration, frames


def _audio(path):
    with av.open(str(path)) as c:
        chunks = [(f.pts, f.to_ndarray()[0]) for f in c.decode(audio=0)]
        rate = c.streams.audio[0].sample_rate
    wave = np.zeros(chunks[-1][0] + len(chunks[-1][1]))
    for pts, samples in chunks:
        wave[pts : pts + len(samples)] = samples
    return wave, rate


def _centre(frame, box):
    """The central 30% of a sprite's box (inside every shape)."""
    x0, y0, x1, y1 = box
    dx, dy = int(0.35 * (x1 - x0)), int(0.35 * (y1 - y0))
    return frame[y0 + dy : y1 - dy, x0 + dx : x1 - dx].reshape(-1, 3).astype(float)


def _closest_colour(mean):
    """The instrument whose colour, scaled to best fit, is nearest the measured mean colour."""
    fit = lambda c: np.abs(mean - (mean @ c / (c @ c)) * c).max()
    return min(INSTRUMENTS, key=lambda name: fit(np.array(INSTRUMENTS[name][0], float)))


def test_frames_show_each_instrument_at_its_position(synth_set):
    out, summary = synth_set
    scenes = json.loads((out / "scenes.json").read_text())["scenes"]
    counts = Counter()
    for scene, path in zip(scenes, summary["videos"]):
        duration, frames = _frames(path)
        assert duration == pytest.approx(scene["duration"], abs=0.05)
        assert len(frames) == scene["duration"] * 8 and frames[0][1].shape == (120, 160, 3)
        for s in (s for s in scene["sources"] if s["visible"]):
            third = SIDES.index(s["position"])
            assert third * 160 / 3 <= (s["box"][0] + s["box"][2]) / 2 < (third + 1) * 160 / 3
            for _, frame in frames[:: scene["fps"]]:
                region = _centre(frame, s["box"])
                assert _closest_colour(region.mean(0)) == s["instrument"]
                assert region.std(0).max() > 20  # the stripes
                counts["instrument"] += 1
            moved = [
                np.abs(_centre(b, s["box"]) - _centre(a, s["box"])).mean()
                for (_, a), (_, b) in zip(frames, frames[1:])
            ]
            sounding = [any(x <= t < y for x, y in s["intervals"]) for t, _ in frames[1:]]
            for m, on in zip(moved, sounding):
                assert (m > 10) if on else (m < 2), (s, m, on)
        for empty in set(SIDES) - {s["position"] for s in scene["sources"]}:
            box = (round(SIDES.index(empty) * 160 / 3) + 15, 50, round(SIDES.index(empty) * 160 / 3) + 38, 80)
            assert _centre(frames[0][1], box).std(0).max() < 8  # plain background
            counts["empty"] += 1
    assert counts["instrument"] >= 20 and counts["empty"] >= 2


def _magnitude(wave, rate, start, end, hz):
    """|spectrum| at hz of the Hann-windowed samples [start, end) s (trimmed 50 ms each side), per sample."""
    x = wave[int((start + 0.05) * rate) : int((end - 0.05) * rate)]
    window = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * window)) / window.sum()
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    near = np.abs(freqs - hz) <= 1.5
    return spectrum[near].max(), spectrum, freqs


def test_audio_holds_each_pitch_while_it_sounds_and_silence_elsewhere(synth_set):
    out, summary = synth_set
    scenes = json.loads((out / "scenes.json").read_text())["scenes"]
    counts = Counter()
    for scene, path in zip(scenes, summary["videos"]):
        wave, rate = _audio(path)
        assert rate == 16000 and len(wave) >= scene["duration"] * rate
        for t in range(scene["duration"]):
            on = [s for s in scene["sources"] if any(a <= t < b for a, b in s["intervals"])]
            rms = np.sqrt(np.mean(wave[t * rate : (t + 1) * rate] ** 2))
            if not on:
                assert rms < 1e-3
                counts["silent"] += 1
            if len(on) == 1:  # loudness = gain: unit-RMS tone and note envelope
                assert rms == pytest.approx(on[0]["gain"] * scene["mix_gain"], rel=0.1)
                counts["solo"] += 1
            for s in scene["sources"]:
                level, spectrum, freqs = _magnitude(wave, rate, t, t + 1, s["f0_hz"])
                if s in on:
                    band = (freqs > 150) & (freqs < 450)  # all the fundamentals, no overtone
                    assert np.abs(freqs[band][spectrum[band].argmax()] - s["f0_hz"]) < 1.5 or len(on) > 1
                    assert level > 0.1 * s["gain"] * scene["mix_gain"]
                    counts["pitch on"] += 1
                elif not [
                    o for o in on if abs(o["f0_hz"] - s["f0_hz"]) < 40
                ]:  # others' notes splash a little
                    assert level < 0.03 * s["gain"] * scene["mix_gain"]
                    counts["pitch off"] += 1
    assert (
        min(counts["silent"], counts["solo"]) >= 2 and counts["pitch on"] >= 20 and counts["pitch off"] >= 5
    )


def test_avaf_decoder_reads_a_generated_video_second_by_second(synth_set):
    from avaf.extract.decode.backends import decode_video

    out, summary = synth_set
    seconds = json.loads((out / "scenes.json").read_text())["scenes"][0]["duration"]
    decoded = decode_video(summary["videos"][0], backend="pyav")
    assert decoded.frames.shape == (seconds, 224, 224, 3) and decoded.audio.shape == (seconds, 16000)
    assert decoded.has_audio and decoded.audio_valid.all()
    with av.open(summary["videos"][0]) as c:
        assert [s.codec_context.name for s in c.streams] == ["h264", "aac"]


def test_annotation_files_load_with_the_real_keys_and_requested_splits(synth_set):
    out, summary = synth_set
    real_keys = list(json.loads(REAL_TEST.read_text(encoding="utf-8"))[0])
    scenes = json.loads((out / "scenes.json").read_text())["scenes"]
    assert summary["videos_per_split"] == split_sizes(5) == {"train": 3, "val": 1, "test": 1}
    ids = []
    for split, path in summary["annotations"].items():
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
        assert all(list(row) == real_keys for row in rows)
        questions = load_annotations(path)
        assert len(questions) == len(rows) == summary["questions_per_split"][split] > 0
        assert {q.split for q in questions} == {split} and all(q.answer in ANSWERS for q in questions)
        assert all(is_real_video(q.video_id) for q in questions)
        videos = {s["video_id"] for s in scenes if s["split"] == split}
        assert {q.video_id for q in questions} == videos and len(videos) == summary["videos_per_split"][split]
        ids += [q.question_id for q in questions]
    assert sorted(ids) == list(range(len(ids)))
    assert sorted(p.name for p in (out / "videos").iterdir()) == [f"0000000{i}.mp4" for i in range(1, 6)]


def test_same_seed_same_bytes_and_the_command_equals_the_library(synth_set, tmp_path):
    out, _ = synth_set
    args = f"--out {tmp_path} --num-videos 5 --seed 0 --seconds 4 6 --size 160x120 --workers 2".split()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "5 videos" in result.output
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert len(files) == 3 + 1 + 5
    for (
        name
    ) in files:  # annotations, scenes.json and the mp4 bytes: nothing embeds a time or the worker count
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    other = [questions_for(video_scene(1, i, (4, 6), (160, 120), 8)) for i in range(5)]
    assert other != [questions_for(video_scene(0, i, (4, 6), (160, 120), 8)) for i in range(5)]


def test_the_encoder_writes_the_same_bytes_every_time(tmp_path):
    scene = video_scene(0, 1, (10, 10), (224, 224), 8)  # with x264's mbtree on, this scene varied run to run
    digests = set()
    for i in range(5):
        write_video(scene, tmp_path / f"{i}.mp4")
        digests.add(hashlib.sha256((tmp_path / f"{i}.mp4").read_bytes()).hexdigest())
    assert len(digests) == 1


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="even"):
        SynthSpec(1, size=(161, 120))
    with pytest.raises(ValueError, match="seconds"):
        SynthSpec(1, seconds=(2, 5))
    with pytest.raises(ValueError, match="videos must be at least 1"):
        SynthSpec(0)
    assert not list(tmp_path.iterdir())  # refused before anything is written
    with pytest.raises(ValueError, match="fractions"):
        split_sizes(10, (0.5, 0.5, 0.5))
    assert split_sizes(200) == {"train": 140, "val": 20, "test": 40}
    result = CliRunner().invoke(main, ["--out", str(tmp_path), "--num-videos", "1", "--size", "big"])
    assert result.exit_code != 0 and "WIDTHxHEIGHT" in result.output


@pytest.mark.parametrize("command", [main, demo_main])
def test_the_count_of_videos_is_num_videos_and_the_old_spelling_still_works(command, tmp_path):
    """--videos names a folder in avaf-extract; where it was a count it is now --num-videos. The old spelling
    still sets the count (with a note), and the help shows only the new one."""
    help_text = CliRunner().invoke(command, ["--help"], terminal_width=200).output
    assert "--num-videos" in help_text and "--videos" not in help_text.replace("--num-videos", "")
    for flag in ("--num-videos", "--videos"):  # 0: refused by the count's own check, before any work
        res = CliRunner().invoke(command, ["--out", str(tmp_path / "x"), flag, "0"])
        assert res.exit_code == 2, res.output
        note = [f"{command.name}: --videos is now --num-videos"] if flag == "--videos" else []
        assert res.stderr.splitlines() == [*note, f"{command.name}: videos must be at least 1, got 0"]
    if command is main:  # avaf-synth has no default count: one of the two spellings is required
        res = CliRunner().invoke(command, ["--out", str(tmp_path / "x")])
        assert res.exit_code == 2 and res.stderr == "avaf-synth: Missing option '--num-videos'.\n"
    assert not (tmp_path / "x").exists()
