"""The auxiliary losses train the model, in both variants: the weighted temporal term (α·L_temp) sends a
gradient to the time attention, its positions and both projections, and the weighted spatial term
(β·L_spat) reaches the AVCM blocks, through each variant's own `losses` (so a loss whose inputs were
detached fails here); and each term reaches only what lies before its inputs."""

from __future__ import annotations

import pytest
import torch

from avaf.train.config import LossConfig, ModelConfig
from avaf.train.inputs import Batch
from avaf.train.model import build_model

D, T, N, M, B = 16, 5, 9, 8, 4
LOSS = {  # each variant's weights; phi just under 1/N as the paper's 0.019 is under 1/49
    "paper": LossConfig(alpha=0.1, beta=0.2, sacl_phi=1 / N - 0.002, sacl_tau=0.4),
    "authors": LossConfig(alpha=100.0, beta=0.2, sacl_phi=1 / N - 0.002, sacl_tau=0.4),
}
# the parameters each term must reach, by name prefix, per variant
TEMPORAL = {
    "paper": (
        "time.positions",
        "time.q.",
        "time.k.",
        "time.v.",
        "time.ffn.",
        "tacl.audio_proj.",
        "tacl.visual_proj.",
    ),
    "authors": (
        "time.positions",
        "time.q.",
        "time.k.",
        "time.v.",
        "time.ffn.",
        "audio_proj.",
        "visual_proj.",
    ),
}
SPATIAL = {
    "paper": ("avcm.visual.attn.", "avcm.visual.ffn.", "avcm.audio.attn.", "avcm.audio.ffn."),
    "authors": ("avcm_visual.attn.", "avcm_visual.ffn.", "avcm_audio.attn.", "avcm_audio.ffn."),
}
AFTER_AVCM = {"paper": ("qoaf.", "pool.", "classifier."), "authors": ("fuse_", "weights.", "head.")}


def batch(seed: int = 0) -> Batch:
    """A batch in the store's layout (CLS + N patches, start token first), every second present."""
    g = torch.Generator().manual_seed(seed)
    return Batch(
        visual=torch.randn(B, T, N + 1, D, generator=g, dtype=torch.float64),
        audio=torch.randn(B, T, 128, generator=g, dtype=torch.float64),
        seconds_mask=torch.ones(B, T, dtype=torch.bool),
        words=torch.randn(B, M, D, generator=g, dtype=torch.float64),
        words_mask=torch.arange(M)[None, :] < torch.tensor([8, 6, 7, 5])[:, None],
        sentence=torch.randn(B, D, generator=g, dtype=torch.float64),
        template_words=torch.tensor([4, 3, 5, 2]),
    )


def term_gradients(variant: str, term: str) -> tuple[float, dict[str, float]]:
    """The term's weighted value and the norm of its gradient per parameter, in eval mode (no dropout)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant=variant, dim=D, heads=2, ffn_dim=32, max_seconds=T)).double()
    model.eval()
    cfg = LOSS[variant]
    losses = model.losses(model(batch()), torch.tensor([0, 1, 2, 3]), cfg)
    weighted = (cfg.alpha if term == "temporal" else cfg.beta) * losses[term]
    assert weighted.requires_grad, f"{variant}: {term} sends no gradient at all"
    names, params = zip(*model.named_parameters())
    grads = torch.autograd.grad(weighted, params, allow_unused=True)
    return float(weighted.detach()), {n: 0.0 if g is None else float(g.norm()) for n, g in zip(names, grads)}


def norm_of(grads: dict[str, float], prefix: str) -> float:
    return sum(v**2 for k, v in grads.items() if k.startswith(prefix)) ** 0.5


@pytest.mark.parametrize("variant", ["paper", "authors"])
def test_temporal_term_trains_the_time_attention_its_positions_and_the_projections(variant):
    value, grads = term_gradients(variant, "temporal")
    assert value > 1e-3
    for prefix in TEMPORAL[variant]:
        assert norm_of(grads, prefix) > 1e-6, (variant, prefix, norm_of(grads, prefix))
    for prefix in (*SPATIAL[variant], *AFTER_AVCM[variant]):  # it reads the inputs of AVCM, nothing after
        assert norm_of(grads, prefix) == 0.0, (variant, prefix)


@pytest.mark.parametrize("variant", ["paper", "authors"])
def test_spatial_term_trains_the_avcm_blocks(variant):
    value, grads = term_gradients(variant, "spatial")
    assert value > 1e-3  # above the authors' floor, where the gradient would stop
    for prefix in SPATIAL[variant]:
        assert norm_of(grads, prefix) > 1e-6, (variant, prefix, norm_of(grads, prefix))
    assert norm_of(grads, "time.positions") > 1e-6  # and on through the audio to the time attention
    for prefix in AFTER_AVCM[variant]:  # fusion and answer head lie after its inputs
        assert norm_of(grads, prefix) == 0.0, (variant, prefix)
