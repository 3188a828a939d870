"""AVAF-Net wiring: attention parity, masking, gradients, ablation switches, learning, and the config."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from avaf.train.attention import CrossAttention, FeedForward
from avaf.train.config import ConfigError, LossConfig, ModelConfig, TrainConfig, load_config
from avaf.train.inputs import Batch
from avaf.train.losses import compute_losses
from avaf.train.model import build_model

D, F_, C, N = 16, 32, 5, 9  # width, FFN width, answers, patches (the inputs carry one more: CLS)
PHI = 1 / N - 0.002  # the paper's phi sits just under 1/N; here N = 9
TINY = ModelConfig(dim=D, heads=2, ffn_dim=F_, n_answers=C, max_seconds=6)
ABLATIONS = ["none", "no_tacl", "no_avcm", "no_sacl", "no_qoaf", "no_all"]


def tiny(switch: str = "none", **kw) -> ModelConfig:
    return dataclasses.replace(TINY, **({} if switch == "none" else {switch: True}), **kw)


def make_inputs(seconds: list[int], words: list[int], t: int = 5, m: int = 7, seed: int = 0) -> Batch:
    """A batch in the store's layout (CLS + N patches, float16 visual) with the given valid lengths."""
    g = torch.Generator().manual_seed(seed)
    b = len(seconds)
    return Batch(
        visual=torch.randn(b, t, N + 1, D, generator=g).half(),
        audio=torch.randn(b, t, 128, generator=g),
        seconds_mask=torch.arange(t)[None, :] < torch.tensor(seconds)[:, None],
        words=torch.randn(b, m, D, generator=g),
        words_mask=torch.arange(m)[None, :] < torch.tensor(words)[:, None],
        sentence=torch.randn(b, D, generator=g),
    )


def losses_of(out, answers: torch.Tensor) -> dict:
    return compute_losses(out, answers, LossConfig(alpha=1.0, beta=0.2, sacl_phi=PHI, sacl_tau=0.4))


def clone(batch: Batch, **changes) -> Batch:
    """A copy of `batch` whose tensors can be written, with some fields replaced."""
    fields = {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}
    return Batch(**{k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in fields.items()} | changes)


# ---------------------------------------------------------------- attention


@pytest.mark.parametrize("order", ["standard", "fold_keys", "fold_queries"])
@pytest.mark.parametrize("n_q,n_k", [(30, 4), (3, 40)])
def test_cross_attention_equals_torch_multihead_attention(order: str, n_q: int, n_k: int) -> None:
    torch.manual_seed(0)
    attn = CrossAttention(D, heads=4)
    attn.order = order
    ref = torch.nn.MultiheadAttention(D, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]))
        ref.in_proj_bias.copy_(torch.cat([attn.q.bias, torch.zeros(D), attn.v.bias]))
        ref.out_proj.weight.copy_(attn.o.weight)
        ref.out_proj.bias.copy_(attn.o.bias)
    x, ctx = torch.randn(3, n_q, D), torch.randn(3, n_k, D)
    mask = torch.arange(n_k)[None, :] < torch.tensor([n_k, 1, n_k // 2])[:, None]
    expected, _ = ref(x, ctx, ctx, key_padding_mask=~mask)
    torch.testing.assert_close(attn(x, ctx, mask), expected, atol=1e-5, rtol=1e-5)


def test_feed_forward_backward_equals_autograd() -> None:
    """The hand-written FFN backward (in-place ReLU mask) against autograd through nn.Linear and relu."""
    torch.manual_seed(0)
    ffn = FeedForward(D, F_).double()
    x, grad = (
        torch.randn(3, 5, D, dtype=torch.double, requires_grad=True),
        torch.randn(3, 5, D, dtype=torch.double),
    )
    ours = torch.autograd.grad((ffn(x) * grad).sum(), [x, *ffn.parameters()])
    reference = ffn.fc2(torch.relu(ffn.fc1(x)))
    theirs = torch.autograd.grad((reference * grad).sum(), [x, *ffn.parameters()])
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(ffn(x), reference)


def test_feed_forward_dropout_backward_equals_finite_differences_and_keeps_the_mean() -> None:
    """Dropout on the hidden state (training, p = 0.3): with the draws fixed (one seed for every call) the
    hand-written backward, which keeps no mask, equals finite differences for the input and all four
    parameters; over 4,000 draws the mean output is the undropped one (the 1/(1-p) scaling)."""
    torch.manual_seed(0)
    ffn = FeedForward(8, 12, dropout=0.3).double().train()
    x = torch.randn(2, 3, 8, dtype=torch.double, requires_grad=True)
    names = [name for name, _ in ffn.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in ffn.parameters()]

    def dropped(x, *params):
        torch.manual_seed(7)
        return torch.func.functional_call(ffn, dict(zip(names, params)), (x,))

    assert torch.autograd.gradcheck(dropped, (x, *params), eps=1e-6, atol=1e-6, fast_mode=True)
    assert (dropped(x, *params) - ffn.eval()(x)).abs().max() > 0.1  # the draws drop something
    with torch.no_grad():
        undropped = ffn.eval()(x)
        mean = torch.stack([ffn.train()(x) for _ in range(4000)]).mean(dim=0)
    assert (mean - undropped).abs().max() < 0.05 * undropped.abs().max()


def test_cheapest_order_at_the_paper_shapes() -> None:
    attn = CrossAttention(512, heads=4)
    assert attn.cheapest(60 * 49, 24) == "fold_keys"  # AVCM: patch tokens over the words
    assert attn.cheapest(24, 60 * 49) == "fold_queries"  # QOAF: words over the patch tokens
    assert attn.cheapest(600, 600) == "standard"


# ---------------------------------------------------------------- outputs and masking


def test_padding_content_changes_nothing() -> None:
    model = build_model(TINY).eval()
    inputs = make_inputs([5, 2, 4], [7, 3, 1])
    garbage = clone(inputs)
    garbage.visual[~inputs.seconds_mask] = float("nan")
    garbage.audio[~inputs.seconds_mask] = 1e4
    garbage.words[~inputs.words_mask] = float("nan")
    answers = torch.tensor([0, 1, 2])
    with torch.no_grad():
        clean, dirty = model(inputs), model(garbage)
        clean_losses, dirty_losses = losses_of(clean, answers), losses_of(dirty, answers)
    assert torch.equal(clean.logits, dirty.logits)
    assert torch.equal(clean.delta, dirty.delta)
    for name in ("ce", "temporal", "spatial", "total"):
        assert torch.isfinite(clean_losses[name]) and torch.equal(clean_losses[name], dirty_losses[name])


def test_padded_sample_equals_unpadded_sample() -> None:
    """Masks everywhere: a sample padded to T=6, M=7 gives what it gives alone at T=3, M=4."""
    model = build_model(TINY).eval()
    padded = make_inputs([3], [4], t=6, m=7)
    alone = dataclasses.replace(
        padded,
        **{k: getattr(padded, k)[:, :3] for k in ("visual", "audio", "seconds_mask")},
        **{k: getattr(padded, k)[:, :4] for k in ("words", "words_mask")},
    )
    answers = torch.tensor([4])
    with torch.no_grad():
        a, b = model(padded), model(alone)
        la, lb = losses_of(a, answers), losses_of(b, answers)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.delta, b.delta, atol=1e-6, rtol=1e-6)
    for name in ("temporal", "spatial", "total"):
        assert la[name].item() == pytest.approx(lb[name].item(), abs=1e-5)
    assert la["spatial"].item() > 0  # phi < 1/N leaves negatives: the check compares real numbers


def test_cls_token_is_not_used() -> None:
    model = build_model(TINY).eval()
    inputs = make_inputs([5, 4], [7, 5])
    other = dataclasses.replace(inputs, visual=inputs.visual.clone())
    other.visual[:, :, 0] = 123.0
    with torch.no_grad():
        assert torch.equal(model(inputs).logits, model(other).logits)


def test_bad_shapes_are_refused_by_name() -> None:
    model = build_model(TINY)
    with pytest.raises(ValueError, match="audio"):
        model(dataclasses.replace(make_inputs([5], [7]), audio=torch.randn(1, 5, 64)))
    with pytest.raises(ValueError, match="max_seconds"):
        model(make_inputs([7], [7], t=7))


# ---------------------------------------------------------------- gradients, ablations, learning


def block_params(d: int, f: int) -> int:
    """One cross-attention block: q, v, o with bias, k without (4d^2 + 3d), 2 LayerNorms (4d), FFN."""
    return 4 * d * d + 3 * d + 4 * d + (d * f + f + f * d + d)


def test_parameter_counts_of_each_ablation() -> None:
    tacl = (D * D + D) + (128 * D + D)
    weight = (D * D + D) + (D * 2 + 2)
    head = (2 * D * D + D) + D + (D * C + C)  # fuse FC, attention pooling (no bias), classifier
    time = (
        6 * D + 3 * (D * D + D) + D * D + 4 * D + (D * F_ + F_ + F_ * D + D)
    )  # positions, q v o, k, LNs, FFN
    full = tacl + time + 4 * block_params(D, F_) + weight + head
    count = {s: sum(p.numel() for p in build_model(tiny(s)).parameters()) for s in ABLATIONS}
    assert count["none"] == full
    assert count["no_tacl"] == count["no_sacl"] == full  # loss terms only: no parameters
    assert sum(p.numel() for p in build_model(tiny(time_positions=False)).parameters()) == full - 6 * D
    assert count["no_avcm"] == full - 2 * block_params(D, F_)
    assert count["no_qoaf"] == full - weight
    assert count["no_all"] == (D + 128 + D) * C + C


def test_without_avcm_the_projections_flow_on_unchanged() -> None:
    out = build_model(tiny("no_avcm"))(make_inputs([5], [7]))
    assert out.spatial.audio is out.temporal.audio  # F'_a = projected F_a


def test_tiny_model_overfits_a_tiny_batch() -> None:
    torch.manual_seed(0)
    model = build_model(tiny(dropout=0.0))
    inputs, answers = make_inputs([5, 3, 4, 2, 5, 1, 5, 4], [7, 3, 5, 2, 6, 4, 1, 7]), torch.arange(8) % C
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(50):
        losses = losses_of(model(inputs), answers)
        opt.zero_grad()
        losses["total"].backward()
        opt.step()
        history.append(losses["ce"].item())
    assert history[0] > 1.2  # about ln 5 = 1.61 at the start
    assert history[-1] < 0.05 * history[0]
    assert (model(inputs).logits.argmax(dim=1) == answers).all()


def test_bf16_autocast_forward_backward() -> None:
    """The dtype plumbing of the GPU path (autocast), exercised with CPU bf16 autocast."""
    torch.manual_seed(0)
    model = build_model(TINY)
    inputs = make_inputs([5, 3], [7, 4])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(inputs)
        losses = losses_of(out, torch.tensor([0, 1]))
    assert out.logits.dtype == torch.bfloat16 and losses["total"].dtype == torch.float32
    losses["total"].backward()
    for name, p in model.named_parameters():
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


def test_inputs_are_not_modified() -> None:
    inputs = make_inputs([2], [3])
    inputs.visual = inputs.visual.float()  # float32 input: the upcast is no copy, the zeroing must be
    before = clone(inputs)
    build_model(TINY)(inputs)
    names = [f.name for f in dataclasses.fields(Batch) if getattr(inputs, f.name) is not None]
    assert len(names) == 6 and all(torch.equal(getattr(before, k), getattr(inputs, k)) for k in names)


# ---------------------------------------------------------------- config


def test_config_round_trip_and_unknown_key() -> None:
    cfg = TrainConfig()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.model.dim, cfg.model.heads, cfg.model.ffn_dim, cfg.model.n_answers) == (512, 4, 2048, 42)
    assert (cfg.loss.alpha, cfg.loss.beta, cfg.loss.sacl_phi, cfg.loss.sacl_tau) == (0.1, 0.2, 0.019, 0.4)
    assert (cfg.optim.lr, cfg.optim.lr_step_epochs, cfg.optim.batch_size, cfg.optim.epochs) == (
        1e-4,
        8,
        32,
        30,
    )
    with pytest.raises(ConfigError, match="model.dimension"):
        TrainConfig.from_dict({"model": {"dimension": 8}})
    with pytest.raises(ConfigError, match="optim.lr"):
        TrainConfig.from_dict({"optim": {"lr": "fast"}})


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_config_override_order(tmp_path, suffix: str) -> None:
    path = tmp_path / f"run{suffix}"
    if suffix == ".yaml":
        path.write_text("model:\n  dim: 64\n  heads: 8\noptim:\n  lr: 0.001\n")
    else:
        path.write_text("[model]\ndim = 64\nheads = 8\n[optim]\nlr = 0.001\n")
    cfg = load_config(path, {"model.heads": 2, "optim": {"epochs": 3}, "loss.beta": None})
    assert (cfg.model.dim, cfg.model.heads) == (64, 2)  # file over defaults, overrides over file
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.loss.beta) == (0.001, 3, 0.2)  # None: flag not given
    path.write_text(path.read_text().replace("heads", "hedas"))
    with pytest.raises(ConfigError, match=f"run{suffix}.*model.hedas"):
        load_config(path, {})
