"""The extraction stage's encoders (extract/encoders/stage.py): VGGish only where there is audio, the same bytes
as encoding every second; the frame encoders normalise in place, the same bits as before; and the CPU-seconds
of each phase that `run_extract` reports (docs/benchmarks.md, "CPU-seconds per video, by phase")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_extract import TINY_CLIP, tiny_cfg

from avaf.extract.decode.backends import decode_video
from avaf.extract.encoders.clip_encoder import load_clip
from avaf.extract.encoders.tome_encoder import preprocess as tome_preprocess
from avaf.extract.encoders.tome_encoder import resize_crop
from avaf.extract.encoders.vggish_encoder import VGGishEncoder, load_vggish
from avaf.extract.packs import clip_model_name
from avaf.extract.pipeline import run_extract
from avaf.shared.store.reader import FeatureStore

from conftest import write_clip

# video id -> (seconds of video, seconds of audio; None: no audio track), in the order they are encoded: every
# second encoded, full's 3 sat at rows 3 of the second pass of 4 and 0-1 of the third; now at rows 1-3 of the first
CLIPS = {"a_short": (4, 1.3), "b_silent": (3, None), "c_full": (3, 3.0)}
VALID = {"a_short": [1, 0, 0, 0], "b_silent": [0, 0, 0], "c_full": [1, 1, 1]}  # 0.3 s of second 1: under half


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("stage_clips")
    for name, (seconds, audio) in CLIPS.items():
        tones = () if audio is None else (300, 500, 700, 900)
        write_clip(d / f"{name}.mp4", seconds=seconds, tones=tones, audio_seconds=audio)
    return d


@pytest.fixture(scope="module")
def extracted(clips, tmp_path_factory):
    """One run, the three videos in one encoder call (their seconds share VGGish's passes), counting the
    examples VGGish encodes."""
    seen = []
    original = VGGishEncoder.encode_examples

    def counting(self, examples):
        seen.append(len(examples))
        return original(self, examples)

    out = tmp_path_factory.mktemp("stage_out") / "feats.h5"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VGGishEncoder, "encode_examples", counting)
        summary = run_extract(tiny_cfg(clips, out, videos_per_call=3, batch_size=4), progress=False)
    assert summary.written == 3 and not summary.failed
    return summary, out, seen


def every_second_encoded(clips, batch_size: int) -> dict[str, np.ndarray]:
    """The stage's audio before this change: every second of every video through VGGish in one call, the
    seconds without audio then zeroed."""
    decoded = {name: decode_video(clips / f"{name}.mp4") for name in CLIPS}
    vggish = load_vggish("random", batch_size=batch_size)
    encoded = vggish.encode_batch(
        [d.audio for d in decoded.values()], [d.num_seconds for d in decoded.values()]
    )
    out = {}
    for (name, d), au in zip(decoded.items(), encoded, strict=True):
        au = au.numpy().astype(np.float16)
        au[~d.audio_valid] = 0
        out[name] = au
    return out


def test_vggish_encodes_only_the_seconds_with_audio_and_stores_the_same_bytes(clips, extracted):
    _, out, seen = extracted
    assert seen == [4]  # short's first second and full's 3; none of silent's 3, nor short's last 3
    reference = every_second_encoded(clips, batch_size=4)
    with FeatureStore(out) as fs:
        for name, valid in VALID.items():
            v = fs.video(name)
            assert v["audio_valid"].astype(int).tolist() == valid
            assert v["audio"].dtype == np.float16 and v["audio"].shape == (len(valid), 128)
            assert v["audio"].tobytes() == reference[name].tobytes()  # bit for bit, zeros included
            assert (np.abs(v["audio"]).sum(axis=1) > 0).astype(int).tolist() == valid


def test_the_cpu_seconds_of_every_phase_are_reported(extracted):
    summary, _, _ = extracted
    cpu = summary.cpu
    assert {"decode", "rgb", "resize", "receive", "clip", "vggish", "write", "merge"} <= set(cpu)
    assert all(v >= 0 for v in cpu.values())
    assert cpu["decode"] > 0 and cpu["decode"] >= cpu["rgb"] + cpu["resize"]  # both happen in the decode
    assert set(summary.timings) == {"decode", "clip", "vggish"}  # wall seconds, as before


def test_frame_encoders_normalise_in_place_with_the_same_bits():
    """CLIP's and ToMe's (x / 255 - mean) / std now run in place on the float copy: the same operations in the
    same order, so the same bits as the expression that made two more float copies per pass."""
    rng = np.random.default_rng(0)
    clip = load_clip(clip_model_name(TINY_CLIP), "random", batch_size=4)
    s = clip.image_size
    frames = rng.integers(0, 256, (6, s, s, 3), dtype=np.uint8)  # two passes of 4, the second padded
    tokens, _ = clip.encode_images(frames)
    pixels = torch.from_numpy(np.concatenate([frames, np.zeros((2, s, s, 3), np.uint8)]))
    pixels = (pixels.permute(0, 3, 1, 2).float().div(255) - clip._mean) / clip._std  # as before, two passes
    with torch.inference_mode():
        before = torch.cat([clip._encode_pixels(p) for p in pixels.split(4)])[:6]
        pooled = torch.cat([clip.model.visual(p) for p in pixels.split(4)])[:6]
    assert tokens.shape == (6, clip.num_tokens, clip.width) and torch.equal(tokens, before)
    assert torch.equal(clip.encode_pooled(frames), pooled)

    big = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    crops = torch.from_numpy(np.stack([resize_crop(f, 32, 36) for f in big])).permute(0, 3, 1, 2).float()
    mean, std = (
        torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1),
        torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1),
    )
    after = tome_preprocess(big, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 36)
    assert after.shape == (3, 3, 32, 32) and torch.equal(after, (crops.div(255) - mean) / std)
