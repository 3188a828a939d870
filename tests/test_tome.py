"""Token Merging (extract/encoders/tome.py) against plain-loop references, and the ToMe-14 encoder's loader and
preprocessing (extract/encoders/tome_encoder.py), on tiny timm ViTs (width 32) with the real 577-token shape."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torchvision import transforms
from torchvision.transforms import InterpolationMode

from avaf.extract.encoders.tome import (
    bipartite_soft_matching,
    merge_tokens,
    proportional_attention_bias,
    token_schedule,
    tome_block,
    tome_forward,
)
from avaf.extract.encoders.tome_encoder import (
    TSPM_R,
    default_tag,
    load_tome,
    preprocess,
    resize_crop,
    tome_weights_filename,
)
from avaf.extract.encoders.weights import WeightsFileError, WeightsUnavailable, state_dict_sha256

TINY = {"embed_dim": 32, "num_heads": 2, "mlp_ratio": 1.0}  # depth 24, patch 16, 384²: 577 tokens


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, many ops


def tiny_vit(seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_large_patch16_384", pretrained=False, **{**TINY, **kwargs}).eval()


# ---- loop references -----------------------------------------------------------------------------------


def ref_matching(keys: list[list[float]], r: int) -> list[tuple[int, int]]:
    """(a, b) position pairs merged: A = even positions, B = odd, class token 0 never merged."""
    n = len(keys)
    r = min(r, (n - 1) // 2)

    def cos(u, v):
        return sum(p * q for p, q in zip(u, v)) / math.sqrt(sum(p * p for p in u) * sum(q * q for q in v))

    edges = []
    for a in range(2, n, 2):
        best, best_b = -math.inf, None
        for b in range(1, n, 2):
            if cos(keys[a], keys[b]) > best:
                best, best_b = cos(keys[a], keys[b]), b
        edges.append((best, a, best_b))
    edges.sort(key=lambda e: (-e[0], e[1]))
    return [(a, b) for _, a, b in edges[:r]]


def ref_merge(x: list[list[float]], size: list[float], pairs: list[tuple[int, int]]):
    """Size-weighted averages; order: kept A tokens, then B tokens, each in their original order."""
    n, merged = len(x), {a for a, _ in pairs}
    parts = {b: [b] + [a for a, bb in pairs if bb == b] for b in range(1, n, 2)}
    order = [a for a in range(0, n, 2) if a not in merged] + list(range(1, n, 2))
    out, sizes = [], []
    for t in order:
        group = parts.get(t, [t])
        s = sum(size[p] for p in group)
        out.append([sum(size[p] * x[p][d] for p in group) / s for d in range(len(x[0]))])
        sizes.append(s)
    return out, sizes


def ref_attention(attn: Attention, x: list[list[float]], size: list[float]):
    """timm Attention with log(size) added to the logits, by loops; also the keys averaged over heads."""
    w, bias = attn.qkv.weight.tolist(), attn.qkv.bias.tolist()
    n, d, heads, hd = len(x), len(x[0]), attn.num_heads, attn.head_dim
    qkv = [[sum(w[o][i] * x[t][i] for i in range(d)) + bias[o] for o in range(3 * d)] for t in range(n)]
    out = [[0.0] * d for _ in range(n)]
    for h in range(heads):
        for t in range(n):
            q = qkv[t][h * hd : (h + 1) * hd]
            logits = [
                sum(q[c] * qkv[j][d + h * hd + c] for c in range(hd)) / math.sqrt(hd) + math.log(size[j])
                for j in range(n)
            ]
            top = max(logits)
            e = [math.exp(v - top) for v in logits]
            for c in range(hd):
                out[t][h * hd + c] = sum(e[j] * qkv[j][2 * d + h * hd + c] for j in range(n)) / sum(e)
    wp, bp = attn.proj.weight.tolist(), attn.proj.bias.tolist()
    y = [[sum(wp[o][i] * out[t][i] for i in range(d)) + bp[o] for o in range(d)] for t in range(n)]
    keys = [[sum(qkv[t][d + h * hd + c] for h in range(heads)) / heads for c in range(hd)] for t in range(n)]
    return y, keys


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ---- (a) the merging maths, pinned by loops ------------------------------------------------------------


def _angle_keys() -> list[list[float]]:
    """9 tokens. B (odd) at 0°, 90°, 180°, 270°; A: cls at 0° (a perfect match, but protected), 2 at 80°,
    4 at 200°, 6 at 265°, 8 at 30°, with different lengths (cosine ignores them)."""
    angles = {0: 0, 1: 0, 2: 80, 3: 90, 4: 200, 5: 180, 6: 265, 7: 270, 8: 30}
    lengths = {0: 1, 1: 2, 2: 0.5, 3: 1, 4: 3, 5: 1, 6: 1, 7: 4, 8: 5}
    rad = {i: math.radians(a) for i, a in angles.items()}
    return [[lengths[i] * math.cos(rad[i]), lengths[i] * math.sin(rad[i])] for i in range(9)]


def test_matching_and_merge_by_hand():
    keys = t([_angle_keys()])  # (1, 9, 2)
    # edges: 6->7 cos 5°, 2->3 cos 10°, 4->5 cos 20°, 8->1 cos 30°; r = 2 keeps the first two
    m = bipartite_soft_matching(keys, 2)
    pos = lambda idx, first: [first + 2 * i for i in idx]  # noqa: E731  set index -> token position
    assert pos(m.src[0].tolist(), 0) == [6, 2] and pos(m.dst[0].tolist(), 1) == [7, 3]
    assert pos(m.keep[0].tolist(), 0) == [0, 4, 8]
    x = t([[[i, -10 * i] for i in range(9)]])  # (1, 9, 2)
    size = t([[1, 1, 2, 3, 1, 1, 1, 2, 1]])
    out, s = merge_tokens(x, size, m)
    # order 0, 4, 8, 1, 3+2, 5, 7+6: token 3' = (2*2 + 3*3) / 5 = 2.6, token 7' = (1*6 + 2*7) / 3 = 20/3
    assert out[0, :, 0].tolist() == pytest.approx([0, 4, 8, 1, 2.6, 5, 20 / 3], abs=1e-6)
    assert s[0].tolist() == [1, 1, 1, 1, 5, 1, 3]
    # r above the cap (9 - 1) // 2 = 4: every A token but the class token merges
    m = bipartite_soft_matching(keys, 100)
    assert m.src.shape == (1, 4) and pos(m.keep[0].tolist(), 0) == [0]
    assert merge_tokens(x, size, m)[1][0].tolist() == [1, 1 + 1, 3 + 2, 1 + 1, 2 + 1]  # 0, 1+8, 3+2, 5+4, 7+6


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("r", [1, 3, 4, 9])
def test_matching_and_merge_equal_loops(seed: int, r: int):
    rng = random.Random(seed)
    n, c, d = 9, 3, 4
    keys = [[rng.gauss(0, 1) for _ in range(c)] for _ in range(n)]
    x = [[rng.gauss(0, 1) for _ in range(d)] for _ in range(n)]
    size = [float(rng.randint(1, 5)) for _ in range(n)]
    want, want_s = ref_merge(x, size, ref_matching(keys, r))
    got, got_s = merge_tokens(t([x]), t([size]), bipartite_soft_matching(t([keys]), r))
    torch.testing.assert_close(got[0], t(want), atol=1e-6, rtol=1e-6)
    assert got_s[0].tolist() == want_s


@pytest.mark.parametrize("fused", [True, False])
def test_proportional_attention_equals_loops(fused: bool):
    torch.manual_seed(0)
    attn = Attention(4, num_heads=2, qkv_bias=True).eval()
    attn.fused_attn = fused  # both of timm's paths take the bias
    x, size = torch.randn(1, 5, 4), t([[1, 3, 1, 2, 7]])
    want, _ = ref_attention(attn, x[0].tolist(), size[0].tolist())
    with torch.no_grad():
        got = attn(x, attn_mask=proportional_attention_bias(size))
    torch.testing.assert_close(got[0], t(want), atol=1e-5, rtol=1e-5)


def test_tome_block_equals_loops():
    """Attention (proportional), keys averaged over heads, matching, merge, then the MLP on merged tokens."""
    torch.manual_seed(0)
    blk = Block(4, num_heads=2, qkv_bias=True).eval()
    x, size = torch.randn(1, 9, 4), t([[1, 2, 1, 1, 3, 1, 1, 2, 1]])
    with torch.no_grad():
        h = blk.norm1(x)[0].tolist()
        y, keys = ref_attention(blk.attn, h, size[0].tolist())
        x1 = [[a + b for a, b in zip(row, dy)] for row, dy in zip(x[0].tolist(), y)]
        merged, want_s = ref_merge(x1, size[0].tolist(), ref_matching(keys, 3))
        m = t([merged])
        want = m + blk.mlp(blk.norm2(m))
        got, got_s = tome_block(blk, x, size, 3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got_s[0].tolist() == want_s


# ---- (b, c, d) the full model ----------------------------------------------------------------------------


def test_577_tokens_merge_to_14():
    model, pixels = tiny_vit(), torch.randn(2, 3, 384, 384)
    assert token_schedule(577, TSPM_R)[-3:] == [52, 27, 14]  # the cap binds in the last two merges
    with torch.inference_mode():
        tokens, sizes = tome_forward(model, pixels, TSPM_R)
    assert tokens.shape == (2, 14, 32) and sizes.shape == (2, 14)
    assert sizes.sum(dim=1).tolist() == [577, 577]
    assert (sizes >= 1).all() and (sizes == sizes.round()).all()


def test_class_token_never_merged():
    # its key equals a B token's key exactly (cosine 1, the best edge there is): still never merged
    keys = torch.randn(1, 9, 3)
    keys[0, 0] = keys[0, 5]
    x, size = torch.randn(1, 9, 4), t([[1, 1, 2, 1, 3, 1, 1, 1, 1]])
    m = bipartite_soft_matching(keys, 4)
    assert 0 not in m.src.tolist()[0]
    out, s = merge_tokens(x, size, m)
    assert torch.equal(out[0, 0], x[0, 0]) and s[0, 0] == 1  # bit for bit
    # a model merging as much as allowed in every block: the class token stays first with size 1
    with torch.inference_mode():
        _, sizes = tome_forward(tiny_vit(depth=6), torch.randn(1, 3, 384, 384), [1000] * 6)
    assert sizes.shape == (1, 10) and sizes[0, 0] == 1 and sizes.sum() == 577  # 577 289 145 73 37 19 10


def test_r0_is_timm_forward_features():
    model, pixels = tiny_vit(), torch.randn(2, 3, 384, 384)
    with torch.inference_mode():
        want = model.forward_features(pixels)
        for r in ([], [0] * 24):
            got, sizes = tome_forward(model, pixels, r)
            assert torch.equal(got, want) and (sizes == 1).all()


# ---- (e) weights ---------------------------------------------------------------------------------------


def test_fabricated_checkpoint_loads_with_checksum(tmp_path):
    src = tiny_vit(seed=3)  # timm's layout, head included (the loader drops it)
    path = tmp_path / "timm-vit_large_patch16_384.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    enc = load_tome(str(path), model_kwargs=TINY)
    headless = {k: v for k, v in src.state_dict().items() if not k.startswith("head.")}
    assert enc.weights_sha256 == state_dict_sha256(headless)
    cfg = enc.config_dict()
    assert cfg["weights_sha256"] == enc.weights_sha256 and cfg["pretrained"] == path.name
    assert cfg["random"] is False and cfg["num_tokens"] == 14 and cfg["r"] == list(TSPM_R)
    pixels = torch.randn(1, 3, 384, 384)
    with torch.inference_mode():
        want, _ = tome_forward(src, pixels, TSPM_R)
    torch.testing.assert_close(enc.encode_pixels(pixels)[0], want, atol=1e-5, rtol=1e-5)


def test_weights_dir_holds_the_default_tag(tmp_path):
    name = tome_weights_filename("vit_large_patch16_384", default_tag())
    assert name == "timm-vit_large_patch16_384.augreg_in21k_ft_in1k.safetensors"
    with pytest.raises(WeightsUnavailable, match=name):
        load_tome(weights_dir=tmp_path, model_kwargs=TINY)
    src = tiny_vit(seed=4)
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(tmp_path / name))
    enc = load_tome(weights_dir=tmp_path, model_kwargs=TINY)
    assert enc.pretrained == "augreg_in21k_ft_in1k" and enc.mean == enc.std == (0.5, 0.5, 0.5)
    assert enc.weights_sha256 == state_dict_sha256(
        {k: v for k, v in src.state_dict().items() if not k.startswith("head.")}
    )


def test_wrong_checkpoints_name_the_file(tmp_path):
    sd = {k: v.contiguous() for k, v in tiny_vit().state_dict().items()}
    cases = {
        "prefixed.safetensors": {f"module.{k}": v for k, v in sd.items()},
        "wider.safetensors": {k: v.contiguous() for k, v in tiny_vit(embed_dim=48).state_dict().items()},
    }
    for name, tensors in cases.items():
        save_file(tensors, str(tmp_path / name))
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    torch.save(sd, tmp_path / "model.pth")
    for name in [*cases, "garbage.safetensors", "model.pth"]:
        with pytest.raises(WeightsFileError, match=name):
            load_tome(str(tmp_path / name), model_kwargs=TINY)


def test_random_weights_are_seeded_and_say_so(caplog):
    a, b = load_tome("random", model_kwargs=TINY), load_tome("random", model_kwargs=TINY)
    assert a.weights_sha256 == b.weights_sha256 and a.random and a.config_dict()["random"] is True
    assert load_tome("random", model_kwargs=TINY, seed=1).weights_sha256 != a.weights_sha256
    assert "RANDOM weights" in caplog.text
    with pytest.raises(ValueError, match="neither"):
        load_tome("no-such-tag-or-file", model_kwargs=TINY)


# ---- (f) preprocessing ---------------------------------------------------------------------------------


def _frame(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 7 + yy) % 256, (yy * 5) % 256, ((xx // 9 + yy // 13) % 2) * 255], axis=-1)
    return rgb.astype(np.uint8)


def test_preprocess_equals_tspm_transform():
    """TSPM's transform_norm: Resize(int(256/224*384), BICUBIC) and CenterCrop(384) on a PIL image,
    ToTensor, Normalize(0.5, 0.5); bit for bit, landscape, portrait and upscaled."""
    reference = transforms.Compose(
        [
            transforms.Resize(int((256 / 224) * 384), interpolation=InterpolationMode.BICUBIC),
            transforms.CenterCrop(384),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ]
    )
    for h, w in [(480, 640), (721, 405), (200, 300)]:
        frame = _frame(h, w)
        got = preprocess(frame[None])
        assert got.shape == (1, 3, 384, 384) and got.dtype == torch.float32
        assert torch.equal(got[0], reference(Image.fromarray(frame)))


def test_resize_crop_geometry_by_hand():
    # 480x640 -> 438x584 (584 = int(438 * 640 / 480)); crop offsets top round(54/2) = 27, left 100
    frame = _frame(480, 640)
    resized = np.asarray(Image.fromarray(frame).resize((584, 438), Image.BICUBIC))
    assert np.array_equal(resize_crop(frame), resized[27 : 27 + 384, 100 : 100 + 384])
    # a flat colour stays that colour: (c / 255 - 0.5) / 0.5 exactly
    flat = np.full((300, 500, 3), (0, 51, 255), dtype=np.uint8)
    got = preprocess(flat[None])[0]
    for ch, c in enumerate((0, 51, 255)):
        assert (got[ch] == (torch.tensor(c / 255.0, dtype=torch.float32) - 0.5) / 0.5).all()
    with pytest.raises(ValueError, match="uint8"):
        resize_crop(frame.astype(np.float32))


def test_encode_frames_any_size():
    enc = load_tome("random", model_kwargs=TINY, batch_size=2)
    frames = np.stack([_frame(240, 320), _frame(240, 320)[::-1].copy(), _frame(240, 320)[:, ::-1].copy()])
    tokens = enc.encode_frames(frames)  # two passes of 2 (the second padded)
    assert tokens.shape == (3, 14, 32) and tokens.dtype == torch.float32
    want, sizes = enc.encode_pixels(enc.preprocess(frames))
    torch.testing.assert_close(tokens, want, atol=1e-5, rtol=1e-5)
    assert (sizes.sum(dim=1) == 577).all()
    assert enc.encode_frames(frames[:0]).shape == (0, 14, 32)
