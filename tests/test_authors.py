"""The authors' variant (DESIGN.md §5b): every loss term against a plain-loop reference written here from
the description, the word layout the data loader gives it, the model's exactness claims, the recipe, and
a trained authors checkpoint evaluated by avaf-eval without a flag."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from avaf.shared.avqa.annotations import load_annotations
from avaf.train.attention import CrossAttention
from avaf.train.authors_losses import (
    authors_spatial_loss,
    compute_authors_losses,
    fnac_loss,
    max_pair_logits,
    normalise_over_time,
    spatial_term,
)
from avaf.train.authors_model import AuthorsNet
from avaf.train.config import ConfigError, LossConfig, ModelConfig, load_config
from avaf.train.inputs import Batch
from avaf.train.model import build_model

TINY = ModelConfig(variant="authors", dim=16, heads=4, ffn_dim=32, max_seconds=6, dropout=0.0)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------------------ FNAC, the plain loops


def fnac_reference(audio, patches, tau=0.03):
    """§5b's FNAC loss with Python loops over every index, every second present. audio (B, T, D),
    patches (B, T, K, D) with K = h*w positions; normalised over the time axis first."""
    b_, t_, k_, d_ = patches.shape
    a = audio.clone()
    p = patches.clone()
    for b in range(b_):  # L2 over T, per sample and per channel (and per position for p)
        for d in range(d_):
            a[b, :, d] = audio[b, :, d] / max(
                math.sqrt(sum(float(audio[b, t, d]) ** 2 for t in range(t_))), 1e-12
            )
            for k in range(k_):
                col = patches[b, :, k, d]
                p[b, :, k, d] = col / max(math.sqrt(sum(float(x) ** 2 for x in col)), 1e-12)
    a, p = a.reshape(b_ * t_, d_), p.reshape(b_ * t_, k_, d_)
    n = b_ * t_

    def dot(x, y):
        return sum(float(x[i]) * float(y[i]) for i in range(d_))

    v = [[sum(float(p[i, k, d]) for k in range(k_)) / k_ for d in range(d_)] for i in range(n)]
    A = [[dot(a[i], a[j]) / tau for j in range(n)] for i in range(n)]
    V = [[sum(v[i][d] * v[j][d] for d in range(d_)) / tau for j in range(n)] for i in range(n)]
    logits = [[max(dot(p[i, k], a[j]) / tau for k in range(k_)) for j in range(n)] for i in range(n)]
    fg = []
    for i in range(n):
        s = [dot(p[i, k], a[i]) / tau for k in range(k_)]
        lo, hi = min(s), max(s)
        keep = [(x - lo) / (hi - lo + 1e-5) > 0.6 for x in s]
        fg.append([sum(float(p[i, k, d]) for k in range(k_) if keep[k]) / k_ for d in range(d_)])
    Fm = [[sum(fg[i][d] * fg[j][d] for d in range(d_)) / tau for j in range(n)] for i in range(n)]

    def softmax_rows(m):
        out = []
        for row in m:
            top = max(row)
            e = [math.exp(x - top) for x in row]
            out.append([x / sum(e) for x in e])
        return out

    def l1(x, y):
        return sum(abs(x[i][j] - y[i][j]) for i in range(n) for j in range(n)) / (n * n)

    sa, sl, sf, si = softmax_rows(A), softmax_rows(logits), softmax_rows(Fm), softmax_rows(V)
    return l1(sa, sl) + l1(sa, sf) + l1(si, sl)


def fnac_naive(audio, patches, tau=0.03):
    """The same loss unblocked, as written: the full (B*T)^2 * K tensor S, autograd through max."""
    a = F.normalize(audio, dim=1).flatten(0, 1)  # (n, D)
    p = F.normalize(patches, dim=1).flatten(0, 1)  # (n, K, D)
    s = torch.einsum("nkd,md->nmk", p, a) / tau  # (n, n, K)
    logits = s.max(dim=2).values
    own = torch.diagonal(s, dim1=0, dim2=1).t()  # (n, K)
    lo, hi = own.min(1, keepdim=True).values, own.max(1, keepdim=True).values
    fg = (p * ((own - lo) / (hi - lo + 1e-5) > 0.6).detach()[..., None]).mean(1)
    v = p.mean(1)
    sm = lambda m: m.softmax(dim=1)  # noqa: E731
    l1 = lambda x, y: (x - y).abs().mean()  # noqa: E731
    sa, sl = sm(a @ a.t() / tau), sm(logits)
    return l1(sa, sl) + l1(sa, sm(fg @ fg.t() / tau)) + l1(sm(v @ v.t() / tau), sl)


def test_time_axis_normalisation_makes_each_channel_a_unit_vector_over_the_seconds():
    x = _rand(2, 5, 3, 4)
    y = normalise_over_time(x, torch.ones(2, 5, dtype=torch.bool))
    assert torch.allclose(y.pow(2).sum(dim=1), torch.ones(2, 3, 4, dtype=torch.float64))
    assert torch.allclose(y[1, :, 2, 3], x[1, :, 2, 3] / x[1, :, 2, 3].norm())
    assert not torch.allclose(y.pow(2).sum(dim=-1), torch.ones(2, 5, 3, dtype=torch.float64))  # not over D


def test_time_normalisation_gradient_is_f_normalize_s_even_for_an_all_zero_channel():
    x = _rand(2, 5, 3, seed=16)
    x[1, :, 2] = 0.0  # a channel silent in every second: its norm is clamped at 1e-12
    g = _rand(2, 5, 3, seed=17)
    mask = torch.ones(2, 5, dtype=torch.bool)
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    (normalise_over_time(ours, mask) * g).sum().backward()
    (F.normalize(ref, dim=1) * g).sum().backward()
    assert torch.allclose(ours.grad, ref.grad, rtol=1e-12, atol=1e-12)
    assert ours.grad[1, :, 2].abs().min() > 1e10  # g / 1e-12, as F.normalize gives


def test_fnac_loss_equals_the_plain_loop_reference():
    audio, patches = _rand(2, 3, 5, seed=1), _rand(2, 3, 4, 5, seed=2)
    got = fnac_loss(audio, patches, torch.ones(2, 3, dtype=torch.bool))
    want = fnac_reference(audio, patches)
    assert want > 0.01  # a value that can be wrong
    assert abs(float(got) - want) < 1e-5


def test_blocked_fnac_equals_the_unblocked_loss_in_value_and_gradient():
    audio = _rand(3, 4, 6, seed=3).requires_grad_()
    patches = _rand(3, 4, 5, 6, seed=4).requires_grad_()
    mask = torch.ones(3, 4, dtype=torch.bool)
    blocked = fnac_loss(audio, patches, mask, block_bytes=4 * 5 * 12 * 5)  # 5 rows per block: 3 blocks
    blocked.backward()
    grads = audio.grad.clone(), patches.grad.clone()
    audio.grad = patches.grad = None
    naive = fnac_naive(audio, patches)
    naive.backward()
    assert abs(blocked.item() - naive.item()) < 1e-10
    assert torch.allclose(grads[0], audio.grad, atol=1e-10) and torch.allclose(
        grads[1], patches.grad, atol=1e-10
    )
    assert grads[0].abs().max() > 1e-3 and grads[1].abs().max() > 1e-3  # both inputs are trained by it


def test_max_pair_logits_by_blocks_equals_the_full_tensor():
    p, a = _rand(7, 3, 4, seed=5), _rand(6, 4, seed=6)
    full = torch.einsum("nkd,md->nmk", p, a).max(dim=2).values / 0.5
    for block_bytes in (1, 4 * 3 * 6 * 2, 1 << 20):  # 1 row, 2 rows, everything at once
        assert torch.allclose(max_pair_logits(p, a, 0.5, block_bytes), full, atol=1e-12)


def test_fnac_leaves_padded_seconds_out():
    audio, patches = _rand(2, 4, 5, seed=7), _rand(2, 4, 3, 5, seed=8)
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[1, 3] = False
    garbage_a, garbage_p = audio.clone(), patches.clone()
    garbage_a[1, 3], garbage_p[1, 3] = 1e3, -1e3
    got = fnac_loss(garbage_a, garbage_p, mask)
    # reference: the padded second zeroed (the time norms are those of the valid seconds), its pairs removed
    a = F.normalize(audio * mask[..., None], dim=1).flatten(0, 1)[mask.flatten()]  # (7, D)
    p = F.normalize(patches * mask[..., None, None], dim=1).flatten(0, 1)[mask.flatten()]  # (7, K, D)
    assert abs(float(got) - float(_fnac_on_rows(a, p))) < 1e-10


def _fnac_on_rows(a, p, tau=0.03):
    """FNAC's matrices on rows already normalised (no normalisation inside)."""
    s = torch.einsum("nkd,md->nmk", p, a) / tau
    own = torch.diagonal(s, dim1=0, dim2=1).t()
    lo, hi = own.min(1, keepdim=True).values, own.max(1, keepdim=True).values
    fg = (p * ((own - lo) / (hi - lo + 1e-5) > 0.6)[..., None]).mean(1)
    v, sl = p.mean(1), s.max(dim=2).values.softmax(1)
    sa = (a @ a.t() / tau).softmax(1)
    return (
        (sa - sl).abs().mean()
        + (sa - (fg @ fg.t() / tau).softmax(1)).abs().mean()
        + ((v @ v.t() / tau).softmax(1) - sl).abs().mean()
    )


# --------------------------------------------------------------------------- spatial, the plain loops


def spatial_reference(query, patches, mask, phi, tau):
    """§5b's spatial term with loops; padded seconds left out as authors_spatial_loss documents."""
    b_, t_, n_, _ = patches.shape

    def cos(x, y):
        return float(torch.dot(x, y) / (x.norm() * y.norm()))

    total = 0.0
    for b in range(b_):
        seconds = [t for t in range(t_) if mask[b, t]]
        acc = 0.0
        for t in seconds:
            c = [cos(patches[b, t, n], query[b, t]) for n in range(n_)]
            z = sum(math.exp(x) for x in c)
            s = [math.exp(x) / z for x in c]
            e = [math.exp(x / tau) for x in s]
            first = sum(e[n] for n in range(n_) if s[n] >= phi) if any(x >= phi for x in s) else 1e-3
            second = sum(e)
            others = [o for o in range(b_) if o != b and mask[o, t]]
            neg = (
                sum(cos(patches[o, t, n], query[b, t]) for o in others for n in range(n_))
                / (len(others) * n_)
                if others
                else 0.0
            )
            acc += -math.log(first / (second + neg))
        total += acc / len(seconds)
    return max(total / b_, 1e-3)


@pytest.mark.parametrize("phi", [0.019, 0.04, 0.2])  # usual, some seconds without positives, none at all
def test_spatial_term_equals_the_plain_loop_reference(phi):
    query, patches = _rand(3, 4, 6, seed=9), _rand(3, 4, 49, 6, seed=10)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[2, 1:] = False
    got = float(spatial_term(query, patches, mask, phi, 0.4))
    want = spatial_reference(query, patches, mask, phi, 0.4)
    s = F.normalize(patches, dim=-1).matmul(F.normalize(query, dim=-1)[..., None])[..., 0].softmax(-1)
    positives = (s >= phi).any(-1)[mask]  # which seconds have a positive patch
    expected = {0.019: (True, True), 0.04: (True, False), 0.2: (False, False)}[phi]  # (any, all)
    assert (bool(positives.any()), bool(positives.all())) == expected
    assert want > 1e-3 and abs(got - want) < 1e-5


def test_spatial_threshold_is_inclusive_a_patch_at_phi_is_positive():
    # one sample (no negatives), N = 2 patches (1,0,0), (0,1,0), phi = tau = 0.5. Second 0: query (1,0,0),
    # s = (0.7310586, 0.2689414), l = 0.3342091 (tests/test_losses.py's hand case); second 1: a query
    # orthogonal to both, s = (1/2, 1/2) exactly = phi: both positive (s >= phi), first = second, l = 0.
    # Mean 0.1671046. A strict threshold would leave no positive there: first = 1e-3, l = log(2 e / 1e-3).
    patches = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]] * 2], dtype=torch.float64)
    query = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert spatial_reference(query, patches, mask, 0.5, 0.5) == pytest.approx(0.1671046, abs=1e-6)
    assert float(spatial_term(query, patches, mask, 0.5, 0.5)) == pytest.approx(0.1671046, abs=1e-6)


def test_spatial_term_is_floored_at_1e_3():
    # every patch positive (phi = 0) and the other samples' patches opposite to the query: -log < 0
    patches = torch.ones(2, 3, 4, 5, dtype=torch.float64)
    patches[1] = -1.0
    query = torch.ones(2, 3, 5, dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    assert spatial_reference(query, patches, mask, 0.0, 0.4) == 1e-3  # the floor is what the loops give too
    assert float(spatial_term(query, patches, mask, 0.0, 0.4)) == pytest.approx(1e-3, abs=1e-12)


def test_spatial_loss_sums_the_sentence_and_audio_terms():
    sentence, patches, audio = _rand(2, 6, seed=11), _rand(2, 3, 49, 6, seed=12), _rand(2, 3, 6, seed=13)
    mask = torch.ones(2, 3, dtype=torch.bool)
    want = spatial_reference(sentence[:, None].expand(-1, 3, -1), patches, mask, 0.019, 0.4)
    want += spatial_reference(audio, patches, mask, 0.019, 0.4)
    assert abs(float(authors_spatial_loss(sentence, patches, audio, mask, 0.019, 0.4)) - want) < 1e-5


def test_total_loss_is_ce_plus_weighted_terms():
    model = AuthorsNet(TINY).double()
    batch = tiny_batch()
    out = model(batch)
    answers = torch.tensor([3, 1, 4])
    weights = LossConfig(alpha=100.0, beta=0.2, sacl_phi=0.019, sacl_tau=0.4)
    losses = {k: v.item() for k, v in compute_authors_losses(out, answers, weights).items()}
    ce = F.cross_entropy(out.logits.float(), answers)
    temporal = fnac_reference(
        out.temporal.audio.detach().float().double(), out.temporal.patches.detach().float().double()
    )
    assert abs(losses["ce"] - ce.item()) < 1e-6
    assert abs(losses["temporal"] - temporal) < 1e-5
    assert abs(losses["total"] - (losses["ce"] + 100 * losses["temporal"] + 0.2 * losses["spatial"])) < 1e-4


# --------------------------------------------------------------------------------------- the model


def tiny_batch(b=3, t=6, n=5, m=9, seed=0) -> Batch:
    """A batch in the store's layout: m + 1 stored text rows (row 0 the start token) and word counts n."""
    g = torch.Generator().manual_seed(seed)
    visual = torch.randn(b, t, n, 16, generator=g, dtype=torch.float64)
    audio = torch.randn(b, t, 128, generator=g, dtype=torch.float64)
    words = torch.randn(b, m, 16, generator=g, dtype=torch.float64)  # text positions 1..m
    start = torch.randn(b, 16, generator=g, dtype=torch.float64)  # their sentence: position 0
    return Batch(
        visual=visual,
        audio=audio,
        seconds_mask=torch.ones(b, t, dtype=torch.bool),
        words=torch.cat((start[:, None], words), dim=1),  # (B, m + 1, D)
        words_mask=torch.ones(b, m + 1, dtype=torch.bool),
        sentence=torch.full((b, 16), float("nan"), dtype=torch.float64),  # the end-of-text output: unused
        template_words=torch.tensor([4, 7, 2])[:b],
    )


def test_word_positions_after_n_change_no_logit():
    model = AuthorsNet(TINY).double().eval()
    batch = tiny_batch()
    want = model(batch).logits
    # all 77 positions stored, as their code reads them, with garbage after each question's n
    words = torch.cat((batch.words, torch.full((3, 67, 16), 7.0, dtype=torch.float64)), dim=1)
    words[0, 5:10] = -3.0  # positions 5..9 of the first question (n = 4)
    longer = dataclasses.replace(batch, words=words, words_mask=torch.ones(3, 77, dtype=torch.bool))
    assert torch.allclose(model(longer).logits, want, atol=1e-12)
    changed = dataclasses.replace(batch, words=batch.words.clone())  # a word inside n does change them
    changed.words[0, 2] += 1.0
    assert (model(changed).logits[0] - want[0]).abs().max() > 1e-4


def test_fusion_weights_come_from_the_sentence_input():
    torch.manual_seed(0)  # the weights, not the suite's order, decide whether ReLU leaves both logits at 0
    model = AuthorsNet(TINY).double().eval()
    batch = tiny_batch()
    out = model(batch)
    start = batch.words[:, 0]  # their sentence: the start token's output
    w = torch.relu(start @ model.weights.weight.t() + model.weights.bias).softmax(-1)  # (B, 2)
    assert torch.allclose(out.delta, w[:, [1, 0]], atol=1e-12)  # reported as (visual, audio)
    # and the answer: w0 * words-over-audio + w1 * words-over-patches, pooled by AttFlat
    other = dataclasses.replace(batch, words=torch.cat((start.flip(0)[:, None], batch.words[:, 1:]), dim=1))
    assert not torch.allclose(model(other).delta, out.delta)  # the test can tell
    assert not torch.allclose(model(other).logits, out.logits)


def test_their_init_fused_qkv_xavier_zero_attention_biases_unit_positions():
    """§5b and their code: q, k, v one fused (3D, D) Xavier-uniform matrix (bound sqrt(6 / 4D), not the
    sqrt(6 / 2D) of a D x D one), the other matrices of the five attention layers Xavier-uniform, attention
    biases zero, the position embedding nn.Embedding's N(0, 1), PyTorch's defaults elsewhere."""
    torch.manual_seed(0)
    d, f = 64, 256
    model = AuthorsNet(ModelConfig(variant="authors", dim=d, heads=4, ffn_dim=f, max_seconds=60))
    fused, square, ffn = math.sqrt(6 / (d + 3 * d)), math.sqrt(6 / (2 * d)), math.sqrt(6 / (d + f))
    for layer in ("time", "avcm_audio.attn", "avcm_visual.attn", "fuse_audio.attn", "fuse_visual.attn"):
        q, k, v, o = (model.get_submodule(f"{layer}.{x}") for x in "qkvo")
        qkv = torch.cat((q.weight, k.weight, v.weight)).detach()  # (3D, D), their in_proj_weight
        assert fused < 0.72 * square  # the two bounds are told apart (sqrt(1/2))
        assert 0.98 * fused < qkv.abs().max() <= fused, layer
        assert float(qkv.std()) == pytest.approx(fused / math.sqrt(3), rel=0.03), (
            layer
        )  # uniform over the bound
        assert 0.95 * square < o.weight.abs().max() <= square, layer
        assert q.bias.abs().max() == v.bias.abs().max() == o.bias.abs().max() == 0.0, layer
    for name in ("time.ffn", "avcm_audio.ffn", "fuse_visual.ffn"):
        fc1, fc2 = model.get_submodule(f"{name}.fc1"), model.get_submodule(f"{name}.fc2")
        assert 0.95 * ffn < fc1.weight.abs().max() <= ffn and 0.95 * ffn < fc2.weight.abs().max() <= ffn
        assert fc1.bias.abs().max() > 0.9 / math.sqrt(d)  # the FFN's biases keep nn.Linear's default
    assert float(model.time.positions.detach().std()) == pytest.approx(1.0, rel=0.03)  # 60 x 64 draws
    w = model.visual_proj.weight  # PyTorch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) = +-0.125
    assert 0.95 / 8 < w.abs().max() <= 1 / 8


def test_checkpoint_keys_are_those_of_the_layers():
    """The init and the dropout sites add no parameter: a checkpoint's keys stay what they were."""
    model = AuthorsNet(TINY)
    names = {k.rsplit(".", 1)[0] for k in model.state_dict()}
    block = {"attn.q", "attn.k", "attn.v", "attn.o", "norm1", "norm2", "ffn.fc1", "ffn.fc2"}
    blocks = {f"{b}.{x}" for b in ("avcm_audio", "avcm_visual", "fuse_audio", "fuse_visual") for x in block}
    time = {"time"} | {f"time.{x}" for x in ("q", "k", "v", "o", "norm1", "norm2", "ffn.fc1", "ffn.fc2")}
    other = {"audio_proj", "visual_proj", "weights", "head.mlp.0", "head.mlp.3", "head.classifier"}
    assert names == blocks | time | other
    assert len(model.state_dict()) == 4 * 15 + 16 + 12


def test_a_key_bias_would_change_nothing():
    """CrossAttention has no key bias where an nn.MultiheadAttention has one: the same function."""
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(16, 4, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_bias.normal_()  # a real key bias among them
    ours = CrossAttention(16, 4).double()
    wq, wk, wv = mha.in_proj_weight.chunk(3)
    bq, _, bv = mha.in_proj_bias.chunk(3)
    with torch.no_grad():
        for lin, w, b in (
            (ours.q, wq, bq),
            (ours.v, wv, bv),
            (ours.o, mha.out_proj.weight, mha.out_proj.bias),
        ):
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        ours.k.weight.copy_(wk)
    x, ctx = _rand(2, 5, 16, seed=14), _rand(2, 3, 16, seed=15)
    keep = torch.tensor([[True, True, False], [True, True, True]])
    want = mha(x, ctx, ctx, key_padding_mask=~keep)[0]
    for order in ("standard", "fold_keys", "fold_queries"):
        ours.order = order
        assert torch.allclose(ours(x, ctx, keep), want, atol=1e-10), order


# ---------------------------------------------------------------------------- data layout and recipe


def test_recipe_per_variant_and_user_settings_win(tmp_path):
    paper, authors = load_config(), load_config(None, {"model.variant": "authors"})
    assert (paper.optim.batch_size, paper.optim.seed) == (32, 0)
    assert (authors.optim.batch_size, authors.optim.seed, authors.loss.alpha) == (64, 42, 100.0)
    assert (authors.loss.beta, authors.loss.sacl_phi, authors.loss.sacl_tau, authors.optim.lr) == (
        0.2,
        0.019,
        0.4,
        1e-4,
    )
    assert authors.run.amp is False and authors.optim.epochs == 30 and authors.optim.lr_step_epochs == 8
    (tmp_path / "c.yaml").write_text("model:\n  variant: authors\noptim:\n  batch_size: 16\n")
    cfg = load_config(tmp_path / "c.yaml", {"optim.seed": 7})
    assert (cfg.model.variant, cfg.optim.batch_size, cfg.optim.seed, cfg.loss.alpha) == (
        "authors",
        16,
        7,
        100.0,
    )
    with pytest.raises(ConfigError, match="no_avcm"):
        load_config(None, {"model.variant": "authors", "model.no_avcm": True})
    with pytest.raises(ConfigError, match="variant"):
        load_config(None, {"model.variant": "theirs"})
    assert isinstance(build_model(authors.model), AuthorsNet)


def word_layout_store(path):
    """Three questions whose word rows are recognisable: row j of question q holds 100 q + j."""
    from avaf.shared.store import QuestionFeatures, VideoFeatures

    from conftest import write_store

    video = VideoFeatures(
        "00000001", "/v.mp4", np.ones((3, 4, 8), np.float16), np.ones((3, 8), np.float16),
        np.ones((3, 128), np.float16), np.ones(3, bool), np.arange(3) + 0.5,
    )  # fmt: skip
    texts = [
        "How many instruments are sounding",
        "Is the cello playing",
        "Where is the first sounding guitar",
    ]
    lengths = [9, 7, 10]  # BPE rows: start token, >= one per word, end token
    questions = [
        QuestionFeatures(
            q,
            "00000001",
            "train",
            text,
            "Audio/Counting",
            "two",
            (100 * q + np.arange(length))[:, None].repeat(8, 1).astype(np.float16),
            np.full(8, -1, np.float16),
        )  # fmt: skip
        for q, (text, length) in enumerate(zip(texts, lengths))
    ]
    return write_store(path, [video], questions)


def test_authors_words_are_positions_1_on_masked_after_the_template_word_count(tmp_path):
    """The data path gives the store's layout and n; the authors' model derives its own from them."""
    from avaf.shared.store import FeatureStore
    from avaf.train.data import Shape, gather, load_split

    with FeatureStore(word_layout_store(tmp_path / "f.h5")) as fs:
        data = load_split(fs, "train", None, "cpu")
    assert data.template_words.tolist() == [5, 4, 6]
    batch, _ = gather(data, data.features, torch.arange(3), Shape(seconds=3, words=10))
    assert batch.words_mask.sum(1).tolist() == [9, 7, 10] and batch.sentence[:, 0].tolist() == [-1.0] * 3
    assert batch.words[2, :, 0].tolist() == [
        200.0 + j for j in range(10)
    ]  # the store's rows: the paper's words
    assert batch.words[1, 7:, 0].tolist() == [0.0, 0.0, 0.0]  # past the 7 stored rows: zeros
    theirs = AuthorsNet.layout(batch)
    assert theirs.words_mask.sum(1).tolist() == [5, 4, 6]
    assert theirs.words_mask[1].tolist() == [True] * 4 + [False] * 2  # a prefix: positions 1..n
    assert theirs.words.shape == (3, 6, 8)  # positions after the batch's largest n (6) dropped
    assert theirs.words[2, :, 0].tolist() == [201.0 + j for j in range(6)]  # rows 1..6: position 1 first
    assert theirs.sentence[:, 0].tolist() == [0.0, 100.0, 200.0]  # the start token (row 0)


def test_trained_authors_checkpoint_is_evaluated_without_a_flag(tmp_path):
    import json

    from avaf.train.cli import eval_main
    from avaf.train.cli import main as train_main

    from conftest import known_answer_store

    feats = known_answer_store(tmp_path / "ka.h5", n_videos=40)
    (tmp_path / "tiny.yaml").write_text("model:\n  ffn_dim: 64\n")
    run = tmp_path / "run"
    flags = ["--variant", "authors", "--dim", "32", "--epochs", "1", "--threads", "2", "--device", "cpu"]
    r = CliRunner().invoke(
        train_main,
        [*flags, "--config", str(tmp_path / "tiny.yaml"), "--feats", str(feats), "--out", str(run)],
    )
    assert r.exit_code == 0, r.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["variant"] == "authors"  # the recipe came with the flag alone
    assert (cfg["optim"]["batch_size"], cfg["optim"]["seed"], cfg["loss"]["alpha"]) == (64, 42, 100.0)
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert metrics["loss_temporal"] > 0 and metrics["loss_spatial"] >= 1e-3
    results = json.loads((run / "results.json").read_text())
    r = CliRunner().invoke(
        eval_main, ["--feats", str(feats), "--checkpoint", str(run / "best"), "--device", "cpu", "--json"]
    )
    assert r.exit_code == 0, r.output
    got = json.loads(r.output[r.output.index("{") :])
    assert got["questions"] == results["questions"]["test"] == 16
    assert got["table"]["All"] == pytest.approx(results["tables"]["test"]["All"])
    assert set(got["delta_per_type"]) == {"Audio/Counting", "Visual/Counting"}  # the authors' fusion weights
    # which cannot depend on the question: the results, avaf-eval and delta.png say so
    assert results["delta_note"] == got["delta_note"] == AuthorsNet.delta_note
    assert AuthorsNet.delta_note.startswith("constant by construction")
    assert f"δ per question type: {AuthorsNet.delta_note}" in (run / "results.md").read_text()
    assert (run / "delta.png").stat().st_size > 10_000


def test_filled_text_has_the_templates_word_count_in_every_shipped_annotation_file(data_dir):
    """The authors' word mask counts the words of the template; the store keeps the filled-in text, so
    train/data.py counts those. That is the same number when each placeholder and each filler is one word:
    checked here on every annotation file the repository ships (original, json_update and v2.0 releases)."""
    files = sorted((data_dir / "music-avqa").rglob("avqa-*.json")) + sorted(
        (data_dir / "music-avqa" / "v2.0").rglob("*.json")
    )
    assert len(files) >= 5
    counted = 0
    for path in files:
        split = "test" if "test" in path.name else "val"
        for q in load_annotations(path, split, duplicates="drop"):
            assert len(q.text.split()) == len(q.template.split()), (path.name, q.question_id, q.text)
            counted += 1
    assert counted > 10_000
