"""Encoders (extract/clip_encoder.py, vggish_encoder.py, weights.py): numbers against naive references.

Weights cannot be downloaded here: models are random-initialised (a tiny open_clip ViT registered from
tests/data/ViT-avaf-tiny.json, and one full-size ViT-B-32), and checkpoints are fabricated in the real key
layouts and saved under the exact names the loaders look for.
"""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from torchvggish import mel_features, vggish_input

from avaf.extract.encoders import clip_encoder, vggish_encoder, weights
from avaf.extract.encoders.batching import TEXT_ROWS
from avaf.extract.encoders.clip_encoder import load_clip
from avaf.extract.encoders.vggish_encoder import build_vggish, load_vggish, log_mel_examples, mel_matrix
from avaf.extract.encoders.weights import (
    WeightsFileError,
    WeightsUnavailable,
    clip_weights_filename,
    fetch_default_weights,
    state_dict_sha256,
)

TINY = "ViT-avaf-tiny"  # image 32, patch 16 (1 + 4 tokens), width 64, 2 layers; text width 32; embed 32
DATA = Path(__file__).parent / "data"
RELEASED_VGGISH_KEYS = [f"features.{i}.{p}" for i in (0, 3, 6, 8, 11, 13) for p in ("weight", "bias")] + [
    f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")
]


@pytest.fixture(scope="module", autouse=True)
def tiny_config() -> None:
    open_clip.add_model_config(DATA / f"{TINY}.json")


@pytest.fixture(scope="module")
def tiny() -> clip_encoder.ClipEncoder:
    return load_clip(TINY, "random", batch_size=2)


@pytest.fixture(scope="module")
def vit_b32() -> clip_encoder.ClipEncoder:
    return load_clip("ViT-B-32", "random")


def frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def clip_preprocess(enc: clip_encoder.ClipEncoder, f: np.ndarray) -> torch.Tensor:
    """open_clip's own inference transform on PIL images already at the model's size: (B, 3, S, S)."""
    tf = open_clip.image_transform(enc.image_size, is_train=False, mean=enc.mean, std=enc.std)
    return torch.stack([tf(Image.fromarray(x)) for x in f])


def naive_tokens(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The ViT trunk step by step from its modules, ln_post and proj on every token: (B, 1 + P, D)."""
    v = model.visual
    x = v.conv1(pixels).flatten(2).transpose(1, 2)  # (B, P, W)
    cls = v.class_embedding.expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + v.positional_embedding  # (B, 1 + P, W)
    x = v.ln_pre(x)
    for block in v.transformer.resblocks:
        x = block(x)
    return v.ln_post(x) @ v.proj  # (B, 1 + P, D)


# ---------------------------------------------------------------- CLIP images


def test_vit_b32_gives_50_tokens_of_512_and_token0_is_pooled(vit_b32):
    f = frames(2, 224)
    tokens, pooled = vit_b32.encode_images(f)
    assert tokens.shape == (2, 50, 512) and pooled.shape == (2, 512)
    assert tokens.dtype == pooled.dtype == torch.float32
    torch.testing.assert_close(tokens[:, 0], pooled, atol=1e-5, rtol=0)
    with torch.no_grad():
        ref = vit_b32.model.encode_image(clip_preprocess(vit_b32, f))
    torch.testing.assert_close(pooled, ref, atol=1e-5, rtol=1e-5)
    assert vit_b32.num_tokens == 50 and vit_b32.width == 512 and vit_b32.image_size == 224


def test_a_video_encodes_to_the_same_bits_alone_and_among_others(vit_b32):
    """DESIGN.md §3 "Determinism": passes of one fixed shape, so a frame's (and a second's) features never
    depend on which other videos shared its batch, on any CPU. Without the padding VGGish's seconds differ by ~1e-8 between
    a pass of 3 and a pass of 8 (AVX2 and AVX-512 alike); CLIP's pooled vector, once computed apart from the
    tokens, differed from token 0 in the last bits."""
    enc = load_clip("ViT-B-32", "random", batch_size=8)
    enc.model.load_state_dict(vit_b32.model.state_dict())
    a, b, c = frames(3, 224, seed=1), frames(3, 224, seed=2), frames(3, 224, seed=3)
    alone_tokens, alone_pooled = enc.encode_images(a)
    mixed_tokens, mixed_pooled = enc.encode_images(np.concatenate([b, a, c]))
    assert torch.equal(alone_tokens, mixed_tokens[3:6]) and torch.equal(alone_pooled, mixed_pooled[3:6])
    assert torch.equal(alone_tokens[:, 0], alone_pooled)  # token 0 and pooled: one computation
    vggish = load_vggish("random", batch_size=8)
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal((t, 16000)).astype(np.float32) for t in (4, 3, 2)]
    alone = vggish.encode_batch([audios[1]])[0]  # unpadded: a pass of 3, whose FC layers round otherwise
    among = vggish.encode_batch(audios)[1]  # rows 4-6 of a pass of 8
    assert alone.shape == (3, 128) and torch.equal(alone, among)


def test_tokens_equal_step_by_step_reference_across_batches(tiny):
    f = frames(5, 32, seed=1)  # batch_size 2: three forward passes
    tokens, pooled = tiny.encode_images(f)
    pixels = clip_preprocess(tiny, f)
    with torch.no_grad():
        ref = naive_tokens(tiny.model, pixels)
        ref_pooled = tiny.model.encode_image(pixels)
    assert tokens.shape == (5, 5, 32)
    torch.testing.assert_close(tokens, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tokens[:, 0], pooled, atol=1e-5, rtol=0)
    assert not torch.allclose(tokens[:, 1], tokens[:, 2])  # patches differ from each other


def test_bf16_autocast_is_close_and_keeps_token0(tiny):
    enc = load_clip(TINY, "random", precision="bf16")
    f = frames(3, 32, seed=2)
    tokens, pooled = enc.encode_images(f)
    ref, _ = tiny.encode_images(f)
    assert tokens.dtype == torch.float32
    torch.testing.assert_close(tokens, ref, atol=0.05, rtol=0.05)
    torch.testing.assert_close(tokens[:, 0], pooled, atol=1e-2, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_autocast_matches_cpu_fp32(vit_b32, precision):
    gpu = load_clip("ViT-B-32", "random", device="cuda", precision=precision)
    assert gpu.weights_sha256 == vit_b32.weights_sha256
    f = frames(4, 224, seed=3)
    tokens, pooled = gpu.encode_images(f)
    ref, _ = vit_b32.encode_images(f)
    assert tokens.device.type == "cpu" and tokens.dtype == torch.float32
    torch.testing.assert_close(tokens, ref, atol=0.05, rtol=0.05)
    torch.testing.assert_close(tokens[:, 0], pooled, atol=1e-2, rtol=0)
    feats = load_vggish("random", device="cuda", precision=precision).encode(np.zeros((2, 16000), np.float32))
    torch.testing.assert_close(
        feats, load_vggish("random").encode(np.zeros((2, 16000), np.float32)), atol=0.05, rtol=0.05
    )


def test_bad_frames_and_empty_batch(tiny):
    with pytest.raises(ValueError, match=r"uint8 frames \(B, 32, 32, 3\)"):
        tiny.encode_images(frames(1, 48))
    with pytest.raises(ValueError, match="uint8"):
        tiny.encode_images(frames(1, 32).astype(np.float32))
    tokens, pooled = tiny.encode_images(np.zeros((0, 32, 32, 3), np.uint8))
    assert tokens.shape == (0, 5, 32) and pooled.shape == (0, 32)


@pytest.mark.parametrize(
    "name, match",
    [
        ("ViT-L-14-CLIPA", "pool_type='avg'"),
        ("coca_ViT-B-32", "attentional_pool"),
        ("RN50", "timm or ResNet"),
    ],
)
def test_towers_whose_token0_is_not_pooled_are_refused(name, match):
    with pytest.raises(ValueError, match=match):
        load_clip(name, "random")


# ---------------------------------------------------------------- CLIP text


def test_sentence_is_encode_text_and_words_cover_every_bpe_token(tiny):
    qs = ["What is the first instrument that sounds?", "How many violins are playing in the video?"]
    (w0, s0), (w1, s1) = tiny.encode_text(qs)
    tok = open_clip.get_tokenizer(TINY)
    with torch.no_grad():
        ref = tiny.model.encode_text(tok(qs))
    torch.testing.assert_close(torch.stack([s0, s1]), ref, atol=1e-5, rtol=1e-5)
    for q, w, s in ((qs[0], w0, s0), (qs[1], w1, s1)):
        assert w.shape == (len(tok.encode(q)) + 2, 32)  # SOT + BPE tokens + EOT
        torch.testing.assert_close(w[-1], s, atol=1e-5, rtol=0)  # the sentence is the EOT token's output
    assert (s0 - s1).abs().max() > 1e-3  # different questions, different sentences
    torch.testing.assert_close(w0[0], w1[0], atol=1e-6, rtol=0)  # the SOT output is the same for all


def test_long_question_is_truncated_to_the_context_length(tiny):
    [(words, sentence)] = tiny.encode_text(["violin " * 200])
    assert words.shape == (77, 32)
    torch.testing.assert_close(words[-1], sentence, atol=1e-5, rtol=0)


def test_trimmed_text_pass_equals_the_full_hooked_pass(tiny, monkeypatch):
    qs = ["Where is the loudest instrument?", "Is there a guitar?", "violin " * 100]
    trimmed = tiny.encode_text(qs)
    monkeypatch.setattr(tiny, "_can_trim", lambda: False)  # the path for CustomTextCLIP towers
    full = tiny.encode_text(qs)
    for (wa, sa), (wb, sb) in zip(trimmed, full, strict=True):
        torch.testing.assert_close(wa, wb, atol=1e-5, rtol=0)
        torch.testing.assert_close(sa, sb, atol=1e-5, rtol=0)


def test_a_question_encodes_to_the_same_bits_alone_and_among_others(vit_b32):
    """Text passes have fixed shapes (batching.text_passes): TEXT_ROWS rows, and a length set by the question
    alone. So its features do not depend on the questions sharing its batch, its encoder actor or a resumed
    run's remaining questions. Run the suite under the AVX2-only settings to check that CPU too."""
    q = "What is the first instrument that comes in?"
    others = [
        f"Is the {w} on the left louder than the {w} on the right number {i}?"
        for i, w in enumerate(["violin", "cello", "guitar", "piano", "flute"] * 8)
    ]
    others += ["violin " * 20, "Is there a tuba?"]  # 18 and 22 positions (passes of 32) and 7 (of 16)
    shapes = []
    hook = vit_b32.model.transformer.register_forward_pre_hook(lambda m, args: shapes.append(args[0].shape))
    try:
        [(words, sentence)] = vit_b32.encode_text([q])
        alone = shapes[:]
        among = vit_b32.encode_text(others[:21] + [q] + others[21:])
    finally:
        hook.remove()
    assert alone == [(TEXT_ROWS, 16, 512)]  # 11 positions rounded up to 16, padded to TEXT_ROWS rows
    assert sorted(shapes[1:]) == [
        (TEXT_ROWS, 16, 512),
        (TEXT_ROWS, 32, 512),
        (TEXT_ROWS, 32, 512),
    ]  # 41 of 32
    assert words.shape == (11, 512)  # SOT, 9 BPE tokens, EOT
    assert torch.equal(among[21][0], words) and torch.equal(among[21][1], sentence)
    with torch.no_grad():  # and it is CLIP's own sentence feature
        ref = vit_b32.model.encode_text(open_clip.get_tokenizer("ViT-B-32")([q]))[0]
    torch.testing.assert_close(sentence, ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- CLIP weights


def tiny_state_dict(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return open_clip.create_model(TINY).state_dict()


def test_checkpoint_files_load_with_their_weights_and_checksum(tmp_path, caplog):
    sd = tiny_state_dict(123)
    save_file(sd, str(tmp_path / "tiny.safetensors"))
    torch.save(sd, tmp_path / "tiny.bin")
    with caplog.at_level(logging.WARNING):
        encs = [load_clip(TINY, str(tmp_path / n)) for n in ("tiny.safetensors", "tiny.bin")]
    assert "assuming nn.GELU" in caplog.text
    for enc in encs:
        loaded = enc.model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in sd.items())
        assert enc.weights_sha256 == state_dict_sha256(sd)
        assert not enc.random and not enc.quick_gelu
    assert encs[0].config_dict()["pretrained"] == "tiny.safetensors"  # a name, never a machine's path
    assert encs[0].weights_sha256 != load_clip(TINY, "random").weights_sha256


def test_quick_gelu_for_openai_files_and_tags(tmp_path):
    save_file(tiny_state_dict(1), str(tmp_path / "tiny-openai.safetensors"))
    enc = load_clip(TINY, str(tmp_path / "tiny-openai.safetensors"))
    assert enc.quick_gelu and any(isinstance(m, QuickGELU) for m in enc.model.modules())
    enc = load_clip(TINY, str(tmp_path / "tiny-openai.safetensors"), quick_gelu=False)
    assert not any(isinstance(m, QuickGELU) for m in enc.model.modules())
    save_file(tiny_state_dict(1), str(tmp_path / "plain.safetensors"))  # weights.json, as fetch writes it
    weights._write_manifest_entry(tmp_path, "plain.safetensors", {"quick_gelu": True})
    assert load_clip(TINY, str(tmp_path / "plain.safetensors")).quick_gelu

    def quick(model: str, tag: str) -> bool:
        source = clip_encoder._Source("tag", tag_cfg=open_clip.get_pretrained_cfg(model, tag))
        return clip_encoder._resolve_quick_gelu(model, tag, source, None)

    assert quick("ViT-B-32", "openai") and quick("ViT-B-16", "openai") and quick("ViT-L-14", "openai")
    assert not quick("ViT-B-32", "laion2b_s34b_b79k")


def test_wrong_checkpoints_give_errors_naming_the_file(tmp_path):
    sd = tiny_state_dict(2)
    sd["visual.proj"] = torch.zeros(64, 16)  # another embedding width
    save_file(sd, str(tmp_path / "wrong_width.safetensors"))
    with pytest.raises(WeightsFileError, match=r"wrong_width\.safetensors.*ViT-avaf-tiny"):
        load_clip(TINY, str(tmp_path / "wrong_width.safetensors"))
    torch.save([1, 2, 3], tmp_path / "not_a_state_dict.bin")
    with pytest.raises(WeightsFileError, match=r"not_a_state_dict\.bin"):
        load_clip(TINY, str(tmp_path / "not_a_state_dict.bin"))
    with pytest.raises(ValueError, match="neither an open_clip tag"):
        load_clip(TINY, str(tmp_path / "missing.safetensors"))


def test_torchscript_is_refused_and_can_be_converted(tmp_path):
    torch.manual_seed(3)
    model = open_clip.create_model(TINY).eval()
    traced = torch.jit.trace_module(model, {"encode_image": (torch.ones(1, 3, 32, 32),)}, check_trace=False)
    traced.save(str(tmp_path / "tiny-openai.pt"))
    with pytest.raises(WeightsFileError, match=r"tiny-openai\.pt is a TorchScript archive"):
        load_clip(TINY, str(tmp_path / "tiny-openai.pt"))
    dst = weights.convert_torchscript_checkpoint(
        tmp_path / "tiny-openai.pt", tmp_path / "tiny-openai.safetensors"
    )
    enc = load_clip(TINY, str(dst))
    assert enc.weights_sha256 == state_dict_sha256(model.state_dict())


def test_offline_errors_say_no_network_and_the_fix(tmp_path, monkeypatch):
    with pytest.raises(WeightsUnavailable, match="--weights-dir") as e:
        load_clip("ViT-B-32", "openai", weights_dir=tmp_path)
    assert clip_weights_filename("ViT-B-32", "openai") in str(e.value)

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(open_clip, "download_pretrained", offline)
    with pytest.raises(WeightsUnavailable, match="no network access.*avaf-fetch-weights.*--weights-dir"):
        load_clip("ViT-B-32", "openai")
    monkeypatch.setattr(vggish_encoder, "torch_hub_vggish_path", lambda: tmp_path / "hub" / "vggish.pth")
    monkeypatch.setattr(vggish_encoder, "download_vggish", offline)
    with pytest.raises(WeightsUnavailable, match="no network access.*avaf-fetch-weights.*--weights-dir"):
        load_vggish("default")
    with pytest.raises(WeightsUnavailable, match="has no VGGish weights.*--weights-dir"):
        load_vggish("default", weights_dir=tmp_path)


def test_fetched_folder_loads_openai_vit_b32_with_quick_gelu(tmp_path, monkeypatch, vit_b32):
    """fetch_default_weights with the downloads faked: the folder it writes is what the loaders read."""
    clip_sd = {k: v.clone() for k, v in vit_b32.model.state_dict().items()}
    torch.manual_seed(4)
    vgg_sd = build_vggish().state_dict()
    monkeypatch.setattr(weights, "download_clip_state_dict", lambda model, tag, qg: clip_sd)
    monkeypatch.setattr(weights, "download_vggish", lambda dst: torch.save(vgg_sd, dst))
    monkeypatch.setattr(weights, "connection_problem", lambda url, timeout_s=3.0: None)  # the hosts answer
    paths = fetch_default_weights(tmp_path)
    assert paths["clip"].name == "open_clip-ViT-B-32-openai.safetensors"
    assert paths["vggish"].name == "vggish-10086976.pth"
    manifest = weights.read_manifest(tmp_path)
    assert manifest[paths["clip"].name]["quick_gelu"] is True

    clip = load_clip("ViT-B-32", "openai", weights_dir=tmp_path)
    acts = {type(m) for m in clip.model.modules()}
    assert QuickGELU in acts and nn.GELU not in acts
    assert clip.weights_sha256 == state_dict_sha256(clip_sd) == manifest[paths["clip"].name]["sha256"]
    assert clip.config_dict()["quick_gelu"] and clip.config_dict()["pretrained"] == "openai"
    assert tuple(clip.mean) == open_clip.OPENAI_DATASET_MEAN
    vgg = load_vggish("default", weights_dir=tmp_path)
    assert vgg.weights_sha256 == state_dict_sha256(vgg_sd) and not vgg.random


# ---------------------------------------------------------------- VGGish


def test_mel_matrix_equals_torchvggish():
    ref = mel_features.spectrogram_to_mel_matrix(
        num_mel_bins=64,
        num_spectrogram_bins=257,
        audio_sample_rate=16000,
        lower_edge_hertz=125,
        upper_edge_hertz=7500,
    )
    np.testing.assert_allclose(mel_matrix(), ref, atol=1e-12, rtol=0)


def test_log_mel_matches_torchvggish_at_a_one_second_hop():
    rng = np.random.default_rng(5)
    n = 16000 * 4 + 7000
    t = np.arange(n) / 16000
    wav = 0.5 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 0.5 * t)) + 0.05 * rng.standard_normal(
        n
    )
    ours = log_mel_examples(wav.astype(np.float32)).numpy()
    assert ours.shape == (4, 96, 64) and ours.dtype == np.float32
    ref0 = vggish_input.waveform_to_examples(wav.astype(np.float32), 16000, return_tensor=False)[0]
    np.testing.assert_allclose(ours[0], ref0, atol=1e-5, rtol=0)
    for s in range(4):  # the reference hops 0.96 s: call it on the slice that starts at second s
        ref = vggish_input.waveform_to_examples(
            wav[s * 16000 :].astype(np.float32), 16000, return_tensor=False
        )[0]
        np.testing.assert_allclose(ours[s], ref, atol=1e-5, rtol=0)


def test_rows_equal_waveform_and_short_audio_is_padded():
    wav = np.random.default_rng(6).uniform(-1, 1, 3 * 16000).astype(np.float32)
    torch.testing.assert_close(log_mel_examples(wav.reshape(3, 16000)), log_mel_examples(wav), atol=0, rtol=0)
    short = wav[:8000]  # 0.5 s
    padded = np.concatenate([short, np.zeros(15600 - 8000, np.float32)])
    ex = log_mel_examples(short)
    assert ex.shape == (1, 96, 64)
    ref = vggish_input.waveform_to_examples(padded, 16000, return_tensor=False)[0]
    np.testing.assert_allclose(ex[0].numpy(), ref, atol=1e-5, rtol=0)
    silent = log_mel_examples(np.zeros(0, np.float32))
    torch.testing.assert_close(silent, torch.full((1, 96, 64), float(np.log(0.01))))
    assert log_mel_examples(wav, num_seconds=5).shape == (5, 96, 64)  # audio shorter than the video


def test_vggish_matches_torchvggish_network_and_is_nonnegative():
    enc = load_vggish("random", seed=7, batch_size=3)
    wav = np.random.default_rng(7).uniform(-0.5, 0.5, 16000 * 5).astype(np.float32)
    feats = enc.encode(wav)
    assert feats.shape == (5, 128) and feats.dtype == torch.float32
    assert (feats >= 0).all() and (feats > 0).any()
    ref_ex = torch.stack(
        [vggish_input.waveform_to_examples(wav[s * 16000 :], 16000)[0].detach() for s in range(5)]
    )  # (5, 1, 96, 64)
    with torch.no_grad():
        ref = enc.model(ref_ex)
    torch.testing.assert_close(feats, ref, atol=1e-4, rtol=1e-4)


def test_vggish_random_init_is_seeded_and_batches_agree():
    a, b, c = load_vggish("random", seed=0), load_vggish("random", seed=0), load_vggish("random", seed=1)
    assert a.random and a.weights_sha256 == b.weights_sha256 != c.weights_sha256
    rng = np.random.default_rng(8)
    clips = [rng.uniform(-1, 1, (t, 16000)).astype(np.float32) for t in (3, 1, 4)]
    together = a.encode_batch(clips)
    for x, y in zip(together, [b.encode(x) for x in clips], strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    assert [len(x) for x in together] == [3, 1, 4]


def test_vggish_released_layout_loads_and_others_are_refused(tmp_path):
    torch.manual_seed(9)
    sd = build_vggish().state_dict()
    assert list(sd) == RELEASED_VGGISH_KEYS
    torch.save(sd, tmp_path / "vggish-10086976.pth")
    save_file(sd, str(tmp_path / "vggish.safetensors"))
    for name in ("vggish-10086976.pth", "vggish.safetensors"):
        enc = load_vggish(str(tmp_path / name))
        assert all(torch.equal(enc.model.state_dict()[k], v) for k, v in sd.items())
        assert enc.weights_sha256 == state_dict_sha256(sd) and enc.config_dict()["weights"] == name
    assert load_vggish("default", weights_dir=tmp_path).weights_sha256 == state_dict_sha256(sd)
    del sd["embeddings.4.bias"]
    torch.save(sd, tmp_path / "truncated.pth")
    with pytest.raises(WeightsFileError, match=r"truncated\.pth.*embeddings\.4\.bias"):
        load_vggish(str(tmp_path / "truncated.pth"))
    assert load_file(str(tmp_path / "vggish.safetensors")).keys() == set(RELEASED_VGGISH_KEYS)
