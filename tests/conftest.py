"""Shared test fixtures. Everything a test needs lives inside the repository (tests/data/ with attribution)."""

from __future__ import annotations

import importlib
from contextlib import ExitStack, contextmanager
from pathlib import Path
from unittest import mock

import av
import numpy as np
import pytest

DATA = Path(__file__).parent / "data"
SR = 16_000
TONES = [440.0, 620.0, 880.0, 1250.0, 1700.0]  # Hz, second t of the generated clips
AMP = 0.5


def write_audio_only(path, seconds: int = 2) -> None:
    """Silent 16 kHz mono AAC and no video stream, behind whatever extension `path` has."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000, layout="mono")
        for start in range(0, 16000 * seconds, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def write_clip(path, seconds, fps=25, tones=TONES, audio_seconds=None, acodec="aac", fmt=None, size=(96, 64)):
    """A clip: frame i has R, G = its index i, B = its second; audio second t is TONES[t] on both channels."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream("libx264", rate=fps, options={"crf": "8"})
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        audio = out.add_stream(acodec, rate=44100, layout="stereo") if tones else None
        for i in range(round(seconds * fps)):
            rgb = (16 * (i % 16) + 8, 16 * (i // 16) + 8, 40 * (i // fps) + 20)
            image = np.broadcast_to(np.array(rgb, np.uint8), (size[1], size[0], 3)).copy()
            out.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(video.encode())
        total = round((audio_seconds if audio_seconds is not None else seconds) * 44100)
        for start in range(0, total if audio else 0, 1024):
            n = np.arange(start, min(start + 1024, total))
            freq = np.asarray(tones)[np.minimum(n // 44100, len(tones) - 1)]
            wave = (AMP * np.sin(2 * np.pi * freq * n / 44100)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 44100, start
            out.mux(audio.encode(frame))
        if audio:
            out.mux(audio.encode())
    return Path(path)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def fake_video(rng, video_id: str, seconds: int, n_tokens: int = 5, width: int = 8):
    """A VideoFeatures with random arrays of the schema's dtypes (values exactly representable in fp16)."""
    from avaf.shared.store.writer import VideoFeatures

    tokens = rng.standard_normal((seconds, n_tokens, width)).astype(np.float16)
    valid = np.ones(seconds, bool)
    valid[seconds // 2 :] = rng.random() < 0.5
    return VideoFeatures(
        video_id=video_id,
        source_path=f"/videos/{video_id}.mp4",
        visual_tokens=tokens,
        visual_pooled=tokens[:, 0].copy(),
        audio=rng.random((seconds, 128)).astype(np.float16),
        audio_valid=valid,
        timestamp=np.arange(seconds) + 0.5 + rng.random(seconds) * 0.01,
        source_size=int(rng.integers(1, 10**9)),
        duration=seconds + float(rng.random()),
        has_audio=bool(valid.all()),
        decoder="pyav",
        streams={"video": 0, "audio": 1, "codec": "h264"},
    )


def write_shard(folder, videos=(), failures=(), questions=(), config=None, signature=None, random=()):
    """One complete shard in `folder` holding the given records; returns its path."""
    from avaf.shared.store.writer import ShardWriter, new_shard_path

    with ShardWriter(new_shard_path(folder), config or {"test": "store"}, signature, random) as w:
        for v in videos:
            w.add_video(v)
        for f in failures:
            w.add_failure(*f)
        for q in questions:
            w.add_question(q)
    return w.path


def write_store(path, videos=(), questions=(), config=None, signature=None, random=()):
    """feats.h5 at `path` built from one shard of the given videos and questions (shards beside it)."""
    from avaf.shared.store.merge import build_store
    from avaf.shared.store.writer import complete_shards, shard_dir

    write_shard(shard_dir(path), videos, (), questions, config, signature, random)
    build_store(complete_shards(shard_dir(path)), path)
    return path


def fake_question(rng, question_id: int, video_id: str, split: str, width: int = 8):
    from avaf.shared.store.writer import QuestionFeatures

    length = int(rng.integers(3, 12))
    return QuestionFeatures(
        question_id=question_id,
        video_id=video_id,
        split=split,
        text=f"Is the violin in video {video_id} playing? №{question_id}",
        type="Audio-Visual/Existential",
        answer="yes",
        words=rng.standard_normal((length, width)).astype(np.float16),
        sentence=rng.standard_normal(width).astype(np.float16),
    )


KNOWN_ANSWERS = ("one", "two", "three", "four")
KNOWN_TYPES = ("Audio/Counting", "Visual/Counting")


def known_answer_store(
    path, n_videos=120, seconds=4, n_tokens=5, width=32, seed=0, splits=(0.6, 0.2, 0.2), audio=True
):
    """A feature store whose answers are known: audio questions read the audio, visual ones the patches.

    Each video has an audio class and an independent visual class (0-3). The audio class is a fixed
    pattern in the VGGish features of every second; the visual class a fixed pattern in one random
    patch token per second. "Audio/Counting" questions answer with the audio class, "Visual/Counting"
    questions with the visual class, both in the words one..four: only the question tells which
    modality to read, so the majority baseline is about 25% and a model must use both inputs.
    audio=False: the same videos with silent (all-zero) audio features.
    """
    from avaf.shared.store.merge import build_store
    from avaf.shared.store.writer import ShardWriter, complete_shards, new_shard_path, shard_dir

    rng = np.random.default_rng(seed)
    patterns = {"audio": rng.standard_normal((4, 128)) * 2, "visual": rng.standard_normal((4, width)) * 2}
    question_words = {k: rng.standard_normal((6, width)) for k in KNOWN_TYPES}
    folder = shard_dir(path)
    cut = np.cumsum(np.array(splits) * n_videos).astype(int)
    with ShardWriter(
        new_shard_path(folder), {"generated": "known_answer_store"}, random_weights=["generated"]
    ) as w:
        for i in range(n_videos):
            a_cls, v_cls = rng.integers(0, 4, size=2)
            video = _known_answer_video(rng, f"{i:08d}", seconds, n_tokens, patterns, (a_cls, v_cls), audio)
            w.add_video(video)
            split = "train" if i < cut[0] else "val" if i < cut[1] else "test"
            for q in _known_answer_questions(rng, i, video.video_id, split, (a_cls, v_cls), question_words):
                w.add_question(q)
    build_store(complete_shards(folder), path)
    return path


def _known_answer_video(rng, vid, seconds, n_tokens, patterns, classes, audio):
    """One video of known_answer_store: the pattern of its visual class in one random patch token per
    second, that of its audio class in every second's VGGish features (all zero where audio is False)."""
    from avaf.shared.store.writer import VideoFeatures

    a_cls, v_cls = classes
    visual = patterns["visual"][v_cls]
    t = int(rng.integers(seconds - 1, seconds + 1))  # some videos shorter: padding is exercised
    tokens = rng.standard_normal((t, n_tokens, len(visual))) * 0.5
    tokens[np.arange(t), rng.integers(1, n_tokens, size=t)] += visual
    sound = np.abs(patterns["audio"][a_cls] + rng.standard_normal((t, 128)) * 0.5) * audio
    return VideoFeatures(
        vid,
        f"/generated/{vid}.mp4",
        tokens.astype(np.float16),
        tokens[:, 0].astype(np.float16),
        sound.astype(np.float16),
        np.ones(t, bool),
        np.arange(t) + 0.5,
    )


def _known_answer_questions(rng, i, vid, split, classes, question_words):
    """Video i's two questions: "Audio/Counting" answered by its audio class, "Visual/Counting" by its
    visual class; the words of each a noisy copy of its type's fixed words."""
    from avaf.shared.store.writer import QuestionFeatures

    questions = []
    for k, (qtype, cls) in enumerate(zip(KNOWN_TYPES, classes)):
        words = question_words[qtype] + rng.standard_normal(question_words[qtype].shape) * 0.1
        questions.append(
            QuestionFeatures(
                2 * i + k,
                vid,
                split,
                f"{qtype}?",
                qtype,
                KNOWN_ANSWERS[cls],
                words.astype(np.float16),
                words.mean(0).astype(np.float16),
            )
        )
    return questions


@pytest.fixture
def one_thread():
    """Torch on one thread for the test, then as before: for files of tiny tensors and thousands of ops, which
    2 threads on 2 busy cores made up to 100x slower (`pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextmanager
def local_cluster(*workers: dict, head: dict | None = None, system_config: dict | None = None):
    """Several Ray nodes on this machine (`ray.cluster_utils.Cluster`): a head, then one node per entry of
    `workers` (add_node arguments: num_cpus, num_gpus, resources). Yields (cluster, worker nodes); on exit
    the driver is disconnected and every node shut down. The cluster is never recorded as this machine's
    current one, so a plain ray.init() elsewhere (another test, another process) cannot join it by accident.
    """
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # a local instance left by an earlier test would be used instead of the cluster
    with ExitStack() as quiet:
        for module in ("ray._private.utils", "ray._common.utils"):  # where Ray versions keep these
            for name in ("write_ray_address", "reset_ray_address"):
                if hasattr(m := importlib.import_module(module), name):
                    quiet.enter_context(mock.patch.object(m, name, lambda *a, **k: None))
        head_args = {"num_cpus": 1, "include_dashboard": False, "_system_config": system_config or {}}
        cluster = Cluster(initialize_head=True, head_node_args=head_args | (head or {}))
        try:
            nodes = [cluster.add_node(**w) for w in workers]
            cluster.wait_for_nodes()
            yield cluster, nodes
        finally:
            ray.shutdown()
            cluster.shutdown()
