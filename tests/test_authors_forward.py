"""The authors' model (DESIGN.md §5b) against a plain reference written here from the description: the same
weights give the same logits in eval mode, and in train mode the same spread of logits over dropout draws,
with dropout where their code drops (p = 0.1 on the attention weights of their five attention layers, on
the FFN's hidden state, on both residual branches, and in the answer head's MLP).

The reference reads the module's parameters and nothing else of it: one sample at a time, one head at a
time, every dropout an explicit Bernoulli mask; float64.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from avaf.train.attention import CrossAttention, CrossAttentionBlock, FeedForward
from avaf.train.authors_model import AuthorsNet
from avaf.train.config import ModelConfig
from avaf.train.time_attention import AudioTimeAttention

P = 0.1
CFG = ModelConfig(variant="authors", dim=16, heads=4, ffn_dim=32, max_seconds=6, dropout=P)
B, T, N, WORDS = 6, 5, 4, [4, 7, 2, 5, 3, 6]
SITES = frozenset(
    {"weights", "hidden", "residual", "head"}
)  # attention weights, FFN hidden, residuals, AttFlat


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: tiny tensors, many ops


def lin(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + (layer.bias if layer.bias is not None else 0.0)


def ln(layer: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + layer.eps) * layer.weight + layer.bias


def drop(x: torch.Tensor, site: str, on: frozenset) -> torch.Tensor:
    """nn.Dropout(P) where the site is on: each element zeroed with probability P, the others scaled by
    1 / (1 - P)."""
    return x * (torch.rand(x.shape, dtype=x.dtype) >= P) / (1 - P) if site in on else x


def attention(attn, heads: int, queries, keys, values, on: frozenset) -> torch.Tensor:
    """nn.MultiheadAttention with dropout P: per head softmax(q k^T / sqrt(E)) over the keys, dropped,
    times v; the heads concatenated, then the output projection. (Lq, D), (Lk, D), (Lk, D) -> (Lq, D)."""
    q, k, v = lin(attn.q, queries), lin(attn.k, keys), lin(attn.v, values)
    e = q.shape[1] // heads
    out = []
    for h in range(heads):
        sl = slice(h * e, (h + 1) * e)
        weights = (q[:, sl] @ k[:, sl].T / math.sqrt(e)).softmax(dim=-1)
        out.append(drop(weights, "weights", on) @ v[:, sl])
    return lin(attn.o, torch.cat(out, dim=1))


def layer(attn, heads: int, owner, x, keys, values, on: frozenset, queries=None) -> torch.Tensor:
    """Their post-norm layer: x = LN(x + drop(attn)); x = LN(x + drop(fc2(drop(relu(fc1(x)))))); the
    attention's queries are x unless given."""
    queries = x if queries is None else queries
    x = ln(owner.norm1, x + drop(attention(attn, heads, queries, keys, values, on), "residual", on))
    hidden = drop(torch.relu(lin(owner.ffn.fc1, x)), "hidden", on)
    return ln(owner.norm2, x + drop(lin(owner.ffn.fc2, hidden), "residual", on))


def reference(model: AuthorsNet, inputs: dict, on: frozenset) -> torch.Tensor:
    """§5b's forward, one sample at a time, dropout at the sites in `on`; every second present. (B, C)"""
    h = model.cfg.heads
    logits = []
    for b, n in enumerate(inputs["n"]):
        words, sentence = inputs["text"][b, 1 : n + 1], inputs["text"][b, 0]  # positions 1..n; 0
        patches = lin(model.visual_proj, inputs["patches"][b].reshape(T * N, -1))  # (T*N, D)
        audio = lin(model.audio_proj, inputs["audio"][b])  # (T, D)
        keyed = audio + model.time.positions[:T]  # positions on queries and keys, not values
        audio = layer(model.time, 1, model.time, audio, keyed, audio, on, queries=keyed)
        mined_p = layer(model.avcm_visual.attn, h, model.avcm_visual, patches, words, words, on)
        mined_a = layer(model.avcm_audio.attn, h, model.avcm_audio, audio, words, words, on)
        by_audio = layer(model.fuse_audio.attn, h, model.fuse_audio, words, mined_a, mined_a, on)
        by_visual = layer(model.fuse_visual.attn, h, model.fuse_visual, words, mined_p, mined_p, on)
        w = torch.relu(lin(model.weights, sentence)).softmax(dim=0)
        fused = w[0] * by_audio + w[1] * by_visual  # (n, D)
        mlp = model.head.mlp  # MCAN's AttFlat: Linear, ReLU, Dropout, Linear(D, 1)
        scores = lin(mlp[3], drop(torch.relu(lin(mlp[0], fused)), "head", on))[:, 0].softmax(dim=0)  # (n,)
        logits.append(lin(model.head.classifier, scores @ fused))
    return torch.stack(logits)


def make_inputs(seed: int = 0) -> tuple[dict, object]:
    """The reference's inputs and the same batch in the store's layout (CLS first, the start token row 0)."""
    from avaf.train.inputs import Batch

    g = torch.Generator().manual_seed(seed)
    m = max(WORDS) + 3  # stored rows beyond each n: the model must mask them
    ref = {
        "patches": torch.randn(B, T, N, 16, generator=g, dtype=torch.float64),
        "audio": torch.randn(B, T, 128, generator=g, dtype=torch.float64),
        "text": torch.randn(B, m, 16, generator=g, dtype=torch.float64),
        "n": WORDS,
    }
    cls = torch.randn(B, T, 1, 16, generator=g, dtype=torch.float64)
    batch = Batch(
        visual=torch.cat((cls, ref["patches"]), dim=2),
        audio=ref["audio"],
        seconds_mask=torch.ones(B, T, dtype=torch.bool),
        words=ref["text"],
        words_mask=torch.ones(B, m, dtype=torch.bool),
        sentence=torch.full((B, 16), float("nan"), dtype=torch.float64),  # unused by their model
        template_words=torch.tensor(WORDS),
    )
    return ref, batch


def model_and_inputs() -> tuple[AuthorsNet, dict, object]:
    torch.manual_seed(0)
    model = AuthorsNet(CFG).double()
    with torch.no_grad():  # LayerNorm affine parameters away from 1 and 0, so they are read right
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    ref, batch = make_inputs()
    return model, ref, batch


def spread(logits: list[torch.Tensor]) -> torch.Tensor:
    """Root mean square over the (B, C) logits of their standard deviation over the draws."""
    return torch.stack(logits).std(dim=0).pow(2).mean().sqrt()


def only(model: AuthorsNet, site: str) -> AuthorsNet:
    """A copy of the model that drops at one kind of site only: p set to 0 at the others, the model's own
    p kept at that one (so a site the model leaves out stays out)."""
    model = copy.deepcopy(model)

    def keep(obj, name: str, kind: str) -> None:
        setattr(obj, name, getattr(obj, name) if site == kind else 0.0)

    for m in model.modules():
        if isinstance(m, CrossAttention):
            keep(m, "dropout", "weights")
        if isinstance(m, AudioTimeAttention):
            keep(m, "attn_dropout", "weights")
            keep(m.dropout, "p", "residual")
        if isinstance(m, FeedForward):
            keep(m, "dropout", "hidden")
        if isinstance(m, CrossAttentionBlock):
            keep(m, "dropout", "residual")
    keep(model.head.mlp[2], "p", "head")
    return model


def spreads(model: AuthorsNet, ref: dict, batch, on: frozenset, draws: int) -> tuple[float, float, float]:
    """The spread of our logits and of the reference's over `draws` dropout draws each, and the
    standard deviation of the reference's eval-mode logits."""
    model.train()
    ours, theirs = [], []
    with torch.no_grad():
        for seed in range(draws):
            torch.manual_seed(seed)
            ours.append(model(batch).logits)
            torch.manual_seed(1000 + seed)
            theirs.append(reference(model, ref, on))
        scale = reference(model, ref, frozenset()).std()
    return float(spread(ours)), float(spread(theirs)), float(scale)


def test_eval_mode_equals_the_reference():
    model, ref, batch = model_and_inputs()
    model.eval()
    with torch.no_grad():
        got, want = model(batch).logits, reference(model, ref, frozenset())
    assert want.std() > 0.1  # logits that can be told apart
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_train_mode_spread_over_dropout_draws_equals_the_reference():
    """Same weights, dropout on: over 50 draws each, the logits spread as much as where their code drops
    (measured: ratios 0.99-1.06 over 9 pairs of seed sets; without the FFN's hidden dropout 0.80, without
    the residual ones 0.67)."""
    model, ref, batch = model_and_inputs()
    ours, theirs, scale = spreads(model, ref, batch, SITES, 50)
    assert theirs > 0.05 * scale  # dropout moves the logits measurably
    assert abs(ours / theirs - 1) < 0.1


@pytest.mark.parametrize("site", sorted(SITES))
def test_each_dropout_site_alone_spreads_the_logits_as_the_reference(site):
    """One kind of site at a time, so a missing one cannot hide in the others' spread; 20 draws each."""
    model, ref, batch = model_and_inputs()
    ours, theirs, scale = spreads(only(model, site), ref, batch, frozenset({site}), 20)
    assert theirs > 0.01 * scale
    assert abs(ours / theirs - 1) < 0.25
