"""Shared test fixtures. Everything a test needs lives inside the repository (tests/data/ with attribution)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


def fake_video(rng, video_id: str, seconds: int, n_tokens: int = 5, width: int = 8):
    """A VideoFeatures with random arrays of the schema's dtypes (values exactly representable in fp16)."""
    import numpy as np

    from avaf.shared.store import VideoFeatures

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


def fake_question(rng, question_id: int, video_id: str, split: str, width: int = 8):
    import numpy as np

    from avaf.shared.store import QuestionFeatures

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
