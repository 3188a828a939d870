"""TACL (eq. 1-3), SACL (eq. 6-9) and their combination (eq. 14): hand-computed values, loop references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from avaf.train.config import LossConfig
from avaf.train.losses import AVAFOutput, compute_losses
from avaf.train.sacl import SaclInputs, spatial_alignment_loss, spatial_contrast
from avaf.train.tacl import TaclInputs, TemporalAlignment, temporal_alignment_loss

# ---------------------------------------------------------------- TACL


def test_temporal_hand_computed() -> None:
    # a = (1,0), (0,1); v = (1,0), (1,0); s = (2,0), (3,3) -> unit (1,0), (1,1)/sqrt2 (cosine ignores scale)
    # S_av = [[1,1],[0,0]]  S_aa = [[1,0],[0,1]]  S_vv = [[1,1],[1,1]]  S_ss = [[1,r],[r,1]], r = 1/sqrt2
    # mean|S_av-S_aa| = mean[[0,1],[0,1]] = 1/2;  mean|S_av-S_vv| = mean[[0,0],[1,1]] = 1/2
    # mean|S_aa-S_ss| = mean[[0,r],[r,0]] = r/2 = sqrt2/4;  L_temp = 1 + sqrt2/4 = 1.3535534
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    s = torch.tensor([[[2.0, 0.0], [3.0, 3.0]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert temporal_alignment_loss(a, v, s, mask).item() == pytest.approx(1 + math.sqrt(2) / 4, abs=1e-6)


def test_temporal_hand_computed_with_padding() -> None:
    # sample 0: the case above, plus a padded third second holding NaN and garbage -> 1.3535534
    # sample 1: one valid second, a = (0,1), v = (1,1), s = (1,0): S_av = 1/sqrt2, S_aa = S_vv = S_ss = 1
    #   -> 2 * (1 - 1/sqrt2) + 0 = 0.5857864;  batch mean = (1.3535534 + 0.5857864) / 2 = 0.9696699
    nan = float("nan")
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [nan, 5.0]], [[0.0, 1.0], [7.0, -3.0], [nan, nan]]])
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [9.0, 9.0]], [[1.0, 1.0], [nan, 1.0], [0.0, 2.0]]])
    s = torch.tensor([[[2.0, 0.0], [3.0, 3.0], [1e30, 0.0]], [[1.0, 0.0], [1.0, nan], [4.0, 4.0]]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    expected = (1 + math.sqrt(2) / 4 + 2 * (1 - 1 / math.sqrt(2))) / 2
    assert temporal_alignment_loss(a, v, s, mask).item() == pytest.approx(expected, abs=1e-6)


def _temporal_loop(a: torch.Tensor, v: torch.Tensor, s: torch.Tensor, mask: torch.Tensor) -> float:
    """Eq. 1-3 literally: per sample, per pair (i, j) of valid seconds, then means."""
    sim = lambda x, y: F.cosine_similarity(x, y, dim=0, eps=1e-12).item()  # noqa: E731
    per_sample = []
    for b in range(a.shape[0]):
        seconds = [t for t in range(a.shape[1]) if mask[b, t]]
        total = 0.0
        for i in seconds:
            for j in seconds:
                s_av = sim(a[b, i], v[b, j])
                total += abs(s_av - sim(a[b, i], a[b, j])) + abs(s_av - sim(v[b, i], v[b, j]))
                total += abs(sim(a[b, i], a[b, j]) - sim(s[b, i], s[b, j]))
        per_sample.append(total / len(seconds) ** 2)
    return sum(per_sample) / len(per_sample)


def test_temporal_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(1)
    a, v, s = (torch.randn(4, 6, 5, generator=g) for _ in range(3))
    mask = torch.arange(6)[None, :] < torch.tensor([6, 1, 3, 5])[:, None]
    assert temporal_alignment_loss(a, v, s, mask).item() == pytest.approx(
        _temporal_loop(a, v, s, mask), abs=1e-5
    )


def test_sounding_feature_is_audio_attended_patch_average() -> None:
    # two patches (1,0), (0,1) and audio (ln3 * sqrt2, 0): dot products / sqrt(D=2) = (ln3, 0)
    # -> softmax = (3/4, 1/4) -> f_s = (3/4, 1/4); f_v = (1/2, 1/2)
    patches = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # (B=1, T=1, N=2, D=2)
    audio = torch.tensor([[[math.log(3) * math.sqrt(2), 0.0]]])
    visual, sounding = TemporalAlignment.pooled(patches, audio)
    torch.testing.assert_close(visual, torch.tensor([[[0.5, 0.5]]]))
    torch.testing.assert_close(sounding, torch.tensor([[[0.75, 0.25]]]))


# ---------------------------------------------------------------- SACL

# one second, N = 2 patches (1,0), (0,1); phi = 0.5, tau = 0.5
# question (1,0): cos = (1, 0) -> s = softmax = (e/(e+1), 1/(e+1)) = (0.7310586, 0.2689414); patch 1 positive
#   l = -log(exp(0.7310586/0.5) / (exp(0.7310586/0.5) + exp(0.2689414/0.5)))
#     = -log(4.3150856 / 6.0274632) = 0.3342091
# audio (0,1): the mirror image, patch 2 positive, the same 0.3342091;  L_spat = 0.6684182
HAND_TERM = 0.3342091
PATCHES = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])  # (B=1, T=1, N=2, D=2)


def test_spatial_hand_computed() -> None:
    mask = torch.ones(1, 1, dtype=torch.bool)
    question, audio = torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.0, 1.0]]])
    loss = spatial_alignment_loss(question, PATCHES, audio, mask, phi=0.5, tau=0.5)
    assert loss.item() == pytest.approx(2 * HAND_TERM, abs=1e-6)


def test_spatial_second_without_positive_is_left_out() -> None:
    # second 0: the hand case (0.3342091); second 1: query (0,0,1) orthogonal to both patches -> s = (1/2, 1/2),
    # none above phi = 0.6 -> left out of the mean, so the loss is 0.3342091, not its half
    patches = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]])
    query = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]], requires_grad=True)
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss = spatial_contrast(query, patches, mask, phi=0.6, tau=0.5)
    assert loss.item() == pytest.approx(HAND_TERM, abs=1e-6)
    loss.backward()
    assert torch.isfinite(query.grad).all()  # no NaN from the -log 0 that was guarded
    # no positive anywhere: 0, not inf
    assert spatial_contrast(query, patches, mask, phi=0.99, tau=0.5).item() == 0.0


def test_spatial_threshold_is_strict_a_patch_at_phi_is_no_positive() -> None:
    # eq. 7: positives are the patches with s > phi. Second 0: the hand case (0.3342091 at phi = tau = 0.5);
    # second 1: a query orthogonal to both patches -> cos (0, 0), s = (1/2, 1/2) exactly = phi: no positive,
    # left out -> 0.3342091. Were the threshold inclusive, both patches would be positives there (l = 0)
    # and the mean 0.3342091 / 2.
    patches = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]])
    query = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    assert spatial_contrast(query, patches, mask, phi=0.5, tau=0.5).item() == pytest.approx(
        HAND_TERM, abs=1e-6
    )


def test_spatial_phi_zero_makes_every_patch_positive_and_the_loss_zero() -> None:
    """phi = 0 gives 0 (Table 4's phi = 0 scores as "w/o SACL"), and so does every phi below the smallest
    softmax value over a second's patches, but not one above it: the threshold is applied to the
    softmax over the patches of each second (another axis would move that edge)."""
    g = torch.Generator().manual_seed(0)
    patches, audio = torch.randn(2, 3, 49, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    sentence = torch.randn(2, 8, generator=g)
    mask = torch.ones(2, 3, dtype=torch.bool)
    question = sentence[:, None].expand(2, 3, 8)
    s = torch.stack(
        [F.cosine_similarity(q[:, :, None], patches, dim=-1).softmax(dim=-1) for q in (question, audio)]
    )  # (2 queries, B, T, N): softmax over the patches of each second
    lowest = s.min().item()
    assert 0.2 / 49 < lowest < 0.9 / 49  # a real edge, far from 0 and from 1/N
    for phi in (0.0, 0.99 * lowest):
        assert spatial_alignment_loss(sentence, patches, audio, mask, phi=phi, tau=0.4).item() == 0.0
    above = spatial_alignment_loss(sentence, patches, audio, mask, phi=1.01 * lowest, tau=0.4).item()
    expected = _spatial_term_loop(question, patches, mask, 1.01 * lowest, 0.4)
    expected += _spatial_term_loop(audio, patches, mask, 1.01 * lowest, 0.4)
    assert above > 1e-4 and above == pytest.approx(expected, rel=1e-3)


def _spatial_term_loop(
    query: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, phi: float, tau: float
):
    """Eq. 6-8 literally, one second at a time; seconds without positives are skipped."""
    per_sample = []
    for b in range(patches.shape[0]):
        losses = []
        for t in range(patches.shape[1]):
            if not mask[b, t]:
                continue
            sims = [F.cosine_similarity(query[b, t], p, dim=0, eps=1e-12) for p in patches[b, t]]
            s = torch.softmax(torch.stack(sims), dim=0).tolist()
            positives = [math.exp(x / tau) for x in s if x > phi]
            if positives:
                losses.append(-math.log(sum(positives) / sum(math.exp(x / tau) for x in s)))
        per_sample.append(sum(losses) / len(losses) if losses else 0.0)
    return sum(per_sample) / len(per_sample)


def test_spatial_matches_loop_reference() -> None:
    g = torch.Generator().manual_seed(2)
    b, t, n, d = 3, 5, 49, 6
    patches, audio, sentence = (
        torch.randn(b, t, n, d, generator=g),
        torch.randn(b, t, d, generator=g),
        torch.randn(b, d),
    )
    mask = torch.arange(t)[None, :] < torch.tensor([5, 2, 4])[:, None]
    phi, tau = 0.019, 0.4
    expected = _spatial_term_loop(sentence[:, None].expand(b, t, d), patches, mask, phi, tau)
    expected += _spatial_term_loop(audio, patches, mask, phi, tau)
    assert expected > 0.01  # the case is not degenerate: some patches are negatives
    got = spatial_alignment_loss(sentence, patches, audio, mask, phi, tau).item()
    assert got == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------- eq. 14


def test_compute_losses_combines_terms_by_name() -> None:
    # CE of uniform logits over 4 answers = ln 4; TACL: the hand case 1 + sqrt2/4; SACL: 2 x 0.3342091
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    v = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    s = torch.tensor([[[2.0, 0.0], [3.0, 3.0]]])
    patches = PATCHES.expand(1, 2, 2, 2)  # both seconds: the SACL hand case
    mask = torch.ones(1, 2, dtype=torch.bool)
    outputs = AVAFOutput(
        logits=torch.zeros(1, 4),
        delta=None,
        temporal=TaclInputs(a, v, s, mask),
        spatial=SaclInputs(
            torch.tensor([[1.0, 0.0]]), patches, torch.tensor([[[0.0, 1.0], [0.0, 1.0]]]), mask
        ),
    )
    cfg = LossConfig(alpha=2.0, beta=0.5, sacl_phi=0.5, sacl_tau=0.5)
    losses = compute_losses(outputs, torch.tensor([3]), cfg)
    assert set(losses) == {"ce", "temporal", "spatial", "total"}
    assert losses["ce"].item() == pytest.approx(math.log(4), abs=1e-6)
    assert losses["temporal"].item() == pytest.approx(1 + math.sqrt(2) / 4, abs=1e-6)
    assert losses["spatial"].item() == pytest.approx(2 * HAND_TERM, abs=1e-6)
    expected_total = math.log(4) + 2.0 * (1 + math.sqrt(2) / 4) + 0.5 * 2 * HAND_TERM
    assert losses["total"].item() == pytest.approx(expected_total, abs=1e-5)

    without = AVAFOutput(logits=outputs.logits, delta=None)  # both components ablated: no slot filled
    losses = compute_losses(without, torch.tensor([3]), cfg)
    assert set(losses) == {"ce", "total"}
    assert losses["total"].item() == pytest.approx(math.log(4), abs=1e-6)
