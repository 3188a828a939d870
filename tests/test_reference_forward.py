"""AVAF-Net's forward against plain loops written from the paper's equations (DESIGN.md §5).

The reference below reads the module's parameters and nothing else of it: attention is a loop over samples,
heads, queries and keys; which side is the query follows eq. 4-5 (patches and audio query the words) and
eq. 10-11 (the words query the mined patches and audio); delta_1 scales the visual branch and delta_2 the
audio branch (eq. 12-13), FC of their concatenation. Computed in float64, compared with the float32 module.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from avaf.train.config import LossConfig, ModelConfig
from avaf.train.inputs import Batch
from avaf.train.losses import compute_losses
from avaf.train.model import build_model

B, T, N, M, D, H, FFN, C = 2, 3, 4, 5, 8, 2, 16, 5
CFG = ModelConfig(dim=D, heads=H, ffn_dim=FFN, n_answers=C, max_seconds=4, dropout=0.0)
SECONDS, WORDS = [3, 2], [5, 3]  # valid lengths per sample: padding is exercised


def linear(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    w = layer.weight.double()
    return x @ w.T + (layer.bias.double() if layer.bias is not None else 0.0)


def layer_norm(ln: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight.double() + ln.bias.double()


def ffn(f, x: torch.Tensor) -> torch.Tensor:
    return linear(f.fc2, torch.relu(linear(f.fc1, x)))


def attention(attn, queries: list, keys: list, values: list, heads: int) -> list:
    """MultiHead(Q, K, V) for one sample, loops over heads, queries and keys; lists of (D,) vectors."""
    e = D // heads
    out = []
    for x in queries:
        q = linear(attn.q, x)
        per_head = []
        for h in range(heads):
            sl = slice(h * e, (h + 1) * e)
            scores = torch.stack([q[sl] @ linear(attn.k, k)[sl] for k in keys]) / math.sqrt(e)
            weights = scores.softmax(0)
            per_head.append(sum(w * linear(attn.v, v)[sl] for w, v in zip(weights, values)))
        out.append(linear(attn.o, torch.cat(per_head)))
    return out


def block(blk, queries: list, context: list) -> list:
    """x = LN(x + MultiHead(x, ctx, ctx)); LN(x + FFN(x)), one query at a time."""
    attended = attention(blk.attn, queries, context, context, blk.attn.heads)
    out = []
    for x, a in zip(queries, attended):
        x = layer_norm(blk.norm1, x + a)
        out.append(layer_norm(blk.norm2, x + ffn(blk.ffn, x)))
    return out


def time_attention(ta, audio: list) -> list:
    """The audio self-attention over the valid seconds: positions on queries and keys, not on values."""
    pos = (
        ta.positions.double() if ta.positions is not None else torch.zeros(len(audio), D, dtype=torch.double)
    )
    keyed = [a + pos[t] for t, a in enumerate(audio)]
    out = []
    for t, x in enumerate(audio):
        q = linear(ta.q, keyed[t])
        weights = (torch.stack([q @ linear(ta.k, k) for k in keyed]) / math.sqrt(D)).softmax(0)
        mixed = linear(ta.o, sum(w * linear(ta.v, a) for w, a in zip(weights, audio)))
        y = layer_norm(ta.norm1, x + mixed)
        out.append(layer_norm(ta.norm2, y + ffn(ta.ffn, y)))
    return out


def reference(model, inputs: dict) -> dict:
    """Eq. 4-5 and 10-13 (with the time attention and attention pooling), per sample, in float64."""
    cfg = model.cfg
    logits, deltas, mined = [], [], []
    for b in range(inputs["visual"].shape[0]):
        t_b, m_b = int(inputs["seconds_mask"][b].sum()), int(inputs["words_mask"][b].sum())
        words = list(inputs["words"][b, :m_b].double())
        sentence = inputs["sentence"][b].double()
        patches = inputs["visual"][b, :t_b, 1:].double()  # CLS dropped
        patches = [[linear(model.tacl.visual_proj, p) for p in second] for second in patches]
        audio = [linear(model.tacl.audio_proj, a) for a in inputs["audio"][b, :t_b].double()]
        audio = time_attention(model.time, audio)
        flat = [p for second in patches for p in second]
        if model.avcm is not None:
            flat = block(model.avcm.visual, flat, words)  # eq. 4: patch tokens query the words
            audio = block(model.avcm.audio, audio, words)  # eq. 5: audio seconds query the words
        mined.append(torch.stack(flat).view(t_b, N, D))
        visual_side = block(model.qoaf.visual, words, flat)  # eq. 10: words query the mined patches
        audio_side = block(model.qoaf.audio, words, audio)  # eq. 11: words query the mined audio
        if cfg.no_qoaf:
            delta = torch.ones(2, dtype=torch.double)
        else:
            w1, w2 = model.qoaf.weight[0], model.qoaf.weight[2]
            delta = linear(w2, torch.relu(linear(w1, sentence))).softmax(0)  # eq. 12
            deltas.append(delta)
        fused = [  # eq. 13: FC(Concat(delta_1 F''_p, delta_2 F''_a))
            linear(model.qoaf.fuse, torch.cat((delta[0] * v, delta[1] * a)))
            for v, a in zip(visual_side, audio_side)
        ]
        scores = torch.cat([linear(model.pool, f) for f in fused])
        pooled = sum(w * f for w, f in zip(scores.softmax(0), fused))
        logits.append(linear(model.classifier, pooled))
    return {"logits": torch.stack(logits), "delta": torch.stack(deltas) if deltas else None, "mined": mined}


def make_inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "visual": torch.randn(B, T, N + 1, D, generator=g),
        "audio": torch.randn(B, T, 128, generator=g),
        "seconds_mask": torch.arange(T)[None, :] < torch.tensor(SECONDS)[:, None],
        "words": torch.randn(B, M, D, generator=g),
        "words_mask": torch.arange(M)[None, :] < torch.tensor(WORDS)[:, None],
        "sentence": torch.randn(B, D, generator=g),
    }


@pytest.mark.parametrize("switch", ["none", "no_avcm", "no_qoaf", "no_tacl", "no_sacl"])
def test_forward_matches_the_equations(switch: str) -> None:
    """Logits, delta and the mined patches F'_p of every ablation equal the loop reference to 1e-5."""
    torch.manual_seed(1)
    model = build_model(CFG if switch == "none" else dataclasses.replace(CFG, **{switch: True})).eval()
    inputs = make_inputs()
    with torch.no_grad():
        out = model(Batch(**inputs))
    ref = reference(model, inputs)
    torch.testing.assert_close(out.logits.double(), ref["logits"], atol=1e-5, rtol=1e-5)
    if switch == "no_qoaf":
        assert out.delta is None
    else:
        torch.testing.assert_close(out.delta.double(), ref["delta"], atol=1e-6, rtol=1e-6)
    if out.spatial is not None:
        for b, t_b in enumerate(SECONDS):
            torch.testing.assert_close(
                out.spatial.patches[b, :t_b].double(), ref["mined"][b], atol=1e-5, rtol=1e-5
            )
    assert ref["logits"].std() > 0.05  # a real comparison, not of two near-constant outputs


def test_delta_scales_the_visual_branch() -> None:
    """Forcing delta = (1, 0) leaves logits that depend on the patches only, (0, 1) on the audio only."""
    torch.manual_seed(2)
    model = build_model(CFG).eval()
    inputs = make_inputs()
    other = make_inputs(seed=5)
    for visual_first, keep in ((True, "visual"), (False, "audio")):
        with torch.no_grad():
            model.qoaf.weight[2].weight.zero_()
            model.qoaf.weight[2].bias.copy_(torch.tensor([40.0, 0.0] if visual_first else [0.0, 40.0]))
            base = model(Batch(**inputs)).logits
            swapped = model(
                Batch(**{**inputs, keep: other[keep]})
            ).logits  # the kept branch changes: logits too
            dropped = "audio" if keep == "visual" else "visual"
            same = model(
                Batch(**{**inputs, dropped: other[dropped]})
            ).logits  # the zero-weighted one: nothing
        assert (base - swapped).abs().max() > 1e-2
        torch.testing.assert_close(base, same, atol=1e-6, rtol=0)


def test_no_all_is_a_linear_classifier_of_the_pooled_inputs() -> None:
    torch.manual_seed(3)
    model = build_model(dataclasses.replace(CFG, no_all=True)).eval()
    inputs = make_inputs()
    rows = []
    for b, t_b in enumerate(SECONDS):
        visual = inputs["visual"][b, :t_b, 1:].double().mean(dim=(0, 1))
        audio = inputs["audio"][b, :t_b].double().mean(dim=0)
        rows.append(linear(model.classifier, torch.cat((visual, audio, inputs["sentence"][b].double()))))
    with torch.no_grad():
        torch.testing.assert_close(
            model(Batch(**inputs)).logits.double(), torch.stack(rows), atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize(
    "switch,terms",
    [
        ("none", {"ce", "temporal", "spatial"}),
        ("no_tacl", {"ce", "spatial"}),
        ("no_sacl", {"ce", "temporal"}),
        ("no_all", {"ce"}),
    ],
)
def test_total_loss_is_eq_14_of_the_terms_present(switch: str, terms: set) -> None:
    torch.manual_seed(4)
    model = build_model(CFG if switch == "none" else dataclasses.replace(CFG, **{switch: True}))
    out = model(Batch(**make_inputs()))
    losses = compute_losses(
        out, torch.tensor([1, 3]), LossConfig(alpha=0.7, beta=0.2, sacl_phi=0.2, sacl_tau=0.4)
    )
    assert set(losses) == terms | {"total"}
    value = {k: v.item() for k, v in losses.items()}
    assert value["ce"] == pytest.approx(
        torch.nn.functional.cross_entropy(out.logits.detach(), torch.tensor([1, 3])).item(), abs=1e-6
    )
    expected = value["ce"] + 0.7 * value.get("temporal", 0.0) + 0.2 * value.get("spatial", 0.0)
    assert value["total"] == pytest.approx(expected, abs=1e-6)
    assert all(v > 1e-3 for v in value.values())  # each term is a real number, not a placeholder zero


def test_gradients_equal_the_reference_gradients() -> None:
    """Backward of the module's CE equals autograd through the loop reference, parameter by parameter."""
    torch.manual_seed(5)
    model = build_model(CFG)
    inputs, answers = make_inputs(), torch.tensor([1, 3])
    torch.nn.functional.cross_entropy(model(Batch(**inputs)).logits, answers).backward()
    ours = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    ref_logits = reference(model, inputs)["logits"]
    grads = torch.autograd.grad(
        torch.nn.functional.cross_entropy(ref_logits, answers), list(model.parameters()), allow_unused=True
    )
    for (name, _), g in zip(model.named_parameters(), grads):
        assert g is not None and g.abs().max() > 1e-6, f"{name} gets no gradient in the reference"
        torch.testing.assert_close(
            ours[name], g, atol=1e-5, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}"
        )
