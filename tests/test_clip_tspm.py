"""CLIP for the `tspm` pack (extract/encoders/clip_encoder.py): ViT-L/14@336 frame embeddings from frames of
any size, and text features at all 77 positions, against open_clip's own model and preprocess.

No weights can be downloaded here: a tiny open_clip ViT (tests/data/ViT-avaf-tiny.json) on random weights
for the text and image paths, and ViT-L-14-336 itself with its registered config swapped for the same
architecture at a tiny width (image 336, patch 14: 577 tokens; the real key names), loaded from a fabricated
checkpoint through the loader's `--weights-dir` and file paths.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.transformer import QuickGELU
from PIL import Image
from safetensors.torch import load_file, save_file

from avaf.extract.encoders.batching import TEXT_ROWS
from avaf.extract.encoders.clip_encoder import ClipEncoder, load_clip
from avaf.extract.encoders.weights import clip_weights_filename, state_dict_sha256

TINY = "ViT-avaf-tiny"  # image 32, patch 16, width 64, 2 layers; text width 32; embed 32
L14 = "ViT-L-14-336"
DATA = Path(__file__).parent / "data"
# ViT-L-14-336's architecture at a tiny width: same image size, patch, context and vocabulary, one layer a tower
L14_TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 336, "layers": 1, "width": 32, "head_width": 16, "patch_size": 14},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
QUESTIONS = [
    "How many sounding violin in the video",
    "Is the cello on the left louder than the piano on the right",
    "Where is the performance",
]


@pytest.fixture(scope="module")
def tiny() -> ClipEncoder:
    open_clip.add_model_config(DATA / f"{TINY}.json")
    return load_clip(TINY, "random", batch_size=2)


@pytest.fixture
def l14_tiny(monkeypatch, tmp_path) -> Path:
    """ViT-L-14-336 registered at a tiny width; a fabricated checkpoint in its open_clip / OpenAI key layout,
    saved under the name `--weights-dir` expects. Returns that folder."""
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, L14, L14_TINY_CFG)
    torch.manual_seed(0)
    sd = open_clip.create_model(L14, force_quick_gelu=True).state_dict()
    save_file(
        {k: v.contiguous() for k, v in sd.items()}, str(tmp_path / clip_weights_filename(L14, "openai"))
    )
    return tmp_path


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A non-square frame with structure (gradients, a bar) and noise, so resampling errors would show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    f = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    f[height // 3 : height // 2] = 255
    return np.clip(f + rng.integers(-20, 21, f.shape), 0, 255).astype(np.uint8)


def naive_words(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The text tower step by step: ln_final output times text_projection at every position (B, C, D)."""
    x = model.token_embedding(ids) + model.positional_embedding  # (B, C, W)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
    return x @ model.text_projection  # (B, C, D)


# ---------------------------------------------------------------- text: all 77 positions


def test_padded_words_are_every_position_projected_and_sentence_is_the_end_row(tiny):
    words, sentence = tiny.encode_text_padded(QUESTIONS)
    assert words.shape == (3, 77, 32) and sentence.shape == (3, 32) and words.dtype == torch.float32
    ids = tiny.tokenize(QUESTIONS)
    end = ids.argmax(dim=-1)
    assert torch.equal(sentence, words[torch.arange(3), end])  # the same bits: one computation
    with torch.no_grad():
        ref_words = naive_words(tiny.model, ids)
        ref_sentence = tiny.model.encode_text(ids)
    torch.testing.assert_close(words, ref_words, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sentence, ref_sentence, rtol=1e-5, atol=1e-5)
    # padding rows are real outputs (position-dependent), not zeros or copies of the end row
    pad = words[0, end[0] + 1 :]
    assert pad.abs().sum() > 0 and not torch.allclose(pad[0], pad[1])
    # the rows up to the end token are the word features the avaf pack stores
    for (real, sent), w, e in zip(tiny.encode_text(QUESTIONS), words, end.tolist(), strict=True):
        torch.testing.assert_close(w[: e + 1], real, rtol=1e-5, atol=1e-5)
        assert real.shape[0] == e + 1 and sent.shape == (32,)


def test_padded_text_gives_the_same_bits_alone_and_among_others_and_empty_input(tiny):
    """Passes of TEXT_ROWS x 77, padded: a question's 77 rows do not depend on the others encoded with it."""
    shapes = []
    hook = tiny.model.transformer.register_forward_pre_hook(lambda m, args: shapes.append(args[0].shape))
    try:
        alone_w, alone_s = tiny.encode_text_padded(QUESTIONS[1:2])
        among_w, among_s = tiny.encode_text_padded(QUESTIONS * 12)  # more than one pass
    finally:
        hook.remove()
    assert shapes == [(TEXT_ROWS, 77, 32)] * (1 + -(-len(QUESTIONS) * 12 // TEXT_ROWS))
    assert among_w.shape == (len(QUESTIONS) * 12, 77, 32)
    for i in range(1, len(among_w), len(QUESTIONS)):
        assert torch.equal(among_w[i], alone_w[0]) and torch.equal(among_s[i], alone_s[0])
    words, sentence = tiny.encode_text_padded([])
    assert words.shape == (0, 77, 32) and sentence.shape == (0, 32)


# ---------------------------------------------------------------- images: pooled, from frames of any size


def test_pooled_from_frames_of_any_size_is_encode_image_of_open_clip_preprocess(tiny):
    frames = [frame(48, 80), frame(90, 40, 1), frame(32, 32, 2)]  # landscape, portrait, already 32 x 32
    tf = open_clip.image_transform(tiny.image_size, is_train=False, mean=tiny.mean, std=tiny.std)
    pixels = torch.stack([tf(Image.fromarray(f)) for f in frames])  # (3, 3, 32, 32)
    ours = (torch.from_numpy(tiny.preprocess(frames)).permute(0, 3, 1, 2) / 255 - tiny._mean) / tiny._std
    torch.testing.assert_close(ours, pixels, rtol=0, atol=1e-5)  # the same uint8 pixels, normalised
    pooled = tiny.encode_pooled(frames)
    assert pooled.shape == (3, 32) and pooled.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(pooled, tiny.model.encode_image(pixels), rtol=1e-5, atol=1e-5)
    # token 0 of the token path is the same embedding
    _, token0 = tiny.encode_images(tiny.preprocess(frames))
    torch.testing.assert_close(pooled, token0, rtol=1e-5, atol=1e-5)
    assert tiny.encode_pooled([]).shape == (0, 32)


def test_pooled_does_not_depend_on_batch_neighbours_and_bad_frames_are_refused(tiny):
    frames = [frame(40, 64, s) for s in range(3)]
    alone = torch.cat([tiny.encode_pooled([f]) for f in frames])
    # fixed-shape passes (batch_size 2, padded): a padding or batching bug moves a row by O(1); on 2 threads a
    # row's place in the pass moves its last bits (seen on this CPU), which no test may depend on
    torch.testing.assert_close(tiny.encode_pooled(frames), alone, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"frame 1: expected uint8 \(H, W, 3\)"):
        tiny.encode_pooled([frames[0], frames[1].astype(np.float32)])
    with pytest.raises(ValueError, match="frame 0"):
        tiny.encode_pooled([frames[0][..., 0]])


# ---------------------------------------------------------------- ViT-L/14@336: layout, QuickGELU, 336 px


@pytest.fixture(scope="module")
def real_l14() -> dict[str, torch.Tensor]:
    """The full-size ViT-L-14-336 state dict on the meta device (shapes and names, no memory), built before
    any test swaps the registered config."""
    with torch.device("meta"):
        return open_clip.create_model(L14, device="meta").state_dict()


def test_real_l14_336_layout_gives_577_tokens_and_768_wide_outputs(real_l14):
    assert real_l14["visual.positional_embedding"].shape == (577, 1024)  # CLS + 24 x 24 patches at 336 / 14
    assert real_l14["visual.proj"].shape == (1024, 768) and real_l14["text_projection"].shape == (768, 768)
    assert real_l14["positional_embedding"].shape == (77, 768)  # 77 text positions
    assert open_clip.get_pretrained_cfg(L14, "openai")["quick_gelu"] is True


def test_fabricated_l14_336_checkpoint_loads_with_quick_gelu_and_336_preprocessing(real_l14, l14_tiny):
    enc = load_clip(L14, "openai", weights_dir=l14_tiny)
    fold = lambda keys: {re.sub(r"resblocks\.\d+\.", "resblocks.N.", k) for k in keys}  # noqa: E731
    assert fold(enc.model.state_dict()) == fold(real_l14)  # the real key names, block indices folded
    tag = open_clip.get_pretrained_cfg(L14, "openai")
    assert enc.quick_gelu and any(isinstance(m, QuickGELU) for m in enc.model.modules())
    assert (enc.image_size, enc.patch_size, enc.num_tokens) == (336, 14, 577)
    assert enc.mean == tuple(tag["mean"]) and enc.std == tuple(tag["std"])
    path = l14_tiny / clip_weights_filename(L14, "openai")
    assert enc.weights_sha256 == state_dict_sha256(load_file(str(path)))
    by_file = load_clip(L14, str(path))  # a local file named as OpenAI's: QuickGELU too
    assert by_file.quick_gelu and by_file.weights_sha256 == enc.weights_sha256


def test_l14_336_pooled_equals_open_clip_model_and_its_preprocess(l14_tiny, monkeypatch):
    """open_clip's own `create_model_and_transforms(ViT-L-14-336, 'openai')` (its tag's preprocessing), on
    the same fabricated file, against ours on frames of other sizes than 336."""
    path = l14_tiny / clip_weights_filename(L14, "openai")
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: str(path))
    ref, _, preprocess = open_clip.create_model_and_transforms(
        L14, pretrained="openai", force_quick_gelu=True
    )
    frames = [frame(290, 500), frame(380, 200, 1)]  # landscape shrunk; portrait enlarged (short side < 336)
    pixels = torch.stack([preprocess(Image.fromarray(f)) for f in frames])  # (2, 3, 336, 336)
    enc = load_clip(L14, "openai", weights_dir=l14_tiny, batch_size=2)
    ours = (torch.from_numpy(enc.preprocess(frames)).permute(0, 3, 1, 2) / 255 - enc._mean) / enc._std
    torch.testing.assert_close(ours, pixels, rtol=0, atol=1e-5)
    pooled = enc.encode_pooled(frames)
    with torch.no_grad():
        expected = ref.eval().encode_image(pixels)  # (2, 16)
    torch.testing.assert_close(pooled, expected, rtol=1e-5, atol=1e-5)
    gelu = load_clip(L14, "openai", weights_dir=l14_tiny, batch_size=2, quick_gelu=False).encode_pooled(
        frames
    )
    assert not torch.allclose(gelu, expected, atol=1e-3)  # the activation matters: the test would see it
