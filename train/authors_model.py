"""The authors' variant of AVAF-Net (`--variant authors`): their public model as docs/training.md ("Variants")
describes it.

Written by us from that description (their repository has no license; none of its code is here): the
published numbers come from it.

    patches (B, T, 49, D) --Linear(D, D)--> p      audio (B, T, 128) --Linear(128, D)--> time attention --> a
    p, a --(temporal "FNAC" loss, authors_losses.py)
    AVCM: p and a each attend over the words 1..n (n = the template's word count)       -> p', a'
    (spatial loss on p' with the sentence and with a', authors_losses.py)
    fusion: the words attend over a' and over p'; w = softmax(ReLU(Linear(D, 2)(sentence)))
            fused = w0 * (words over a') + w1 * (words over p')                          (B, M, D)
    answer: MCAN's AttFlat over the words 1..n, Linear(D, 42)                             (B, C)

Blocks shared with the paper variant: `time_attention.AudioTimeAttention` and four
`attention.CrossAttentionBlock`s (no key bias: softmax cancels one; tests/test_authors.py checks it), built
with their dropout sites (attention weights, FFN hidden state, both residual branches) and their init
(`their_init`). Our readings where that description is silent: the same section. The class owns its recipe
and its objective.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .attention import CrossAttentionBlock
from .authors_losses import AuthorsOutput, AuthorsSpatialInputs, FnacInputs, compute_authors_losses
from .inputs import Batch, prepare_inputs
from .model_config import ModelConfig
from .time_attention import AudioTimeAttention


class AttFlat(nn.Module):
    """MCAN's AttFlat with one glimpse: a masked softmax over the words of an MLP score, then Linear(D, C)."""

    def __init__(self, dim: int, n_answers: int, dropout: float) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(dim, 1)
        )
        self.classifier = nn.Linear(dim, n_answers)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x: (B, M, D); mask: (B, M) True where the word counts -> logits (B, C)."""
        scores = self.mlp(x).squeeze(-1).masked_fill(~mask, -1e9)  # (B, M); MCAN's fill value
        return self.classifier(torch.einsum("bm,bmd->bd", scores.softmax(dim=-1), x))  # (B, C)


def their_init(layer: AudioTimeAttention | CrossAttentionBlock) -> None:
    """Their init of one attention layer (an nn.MultiheadAttention and an FFN in their code): q, k, v
    Xavier-uniform as the one fused (3D, D) input projection (bound sqrt(6 / 4D), not sqrt(6 / 2D) per
    matrix), the output projection and the FFN's matrices Xavier-uniform, the attention biases zero;
    PyTorch's defaults elsewhere (the FFN's biases, the LayerNorms, and every layer outside these)."""
    attn = layer.attn if isinstance(layer, CrossAttentionBlock) else layer
    bound = math.sqrt(6 / (attn.q.in_features + 3 * attn.q.out_features))  # fan_in D, fan_out 3D
    for lin in (attn.q, attn.k, attn.v):  # three blocks of the fused matrix, each U(-bound, bound)
        nn.init.uniform_(lin.weight, -bound, bound)
    for lin in (attn.o, layer.ffn.fc1, layer.ffn.fc2):
        nn.init.xavier_uniform_(lin.weight)
    for lin in (attn.q, attn.v, attn.o):  # k has none (softmax cancels a key bias)
        nn.init.zeros_(lin.bias)


class AuthorsNet(nn.Module):
    """The authors' model (docs/training.md, "Variants"): `build_model(ModelConfig(variant="authors"))`."""

    #: their recipe, a layer between the defaults and the user's file and flags (config.load_config): batch
    #: 64, seed 42, no warm-up, temporal weight 100, fp32 (no autocast on GPU); the rest (Adam 1e-4, x0.1 every 8 epochs,
    #: 30 epochs, spatial weight 0.2, phi 0.019, tau 0.4) equals the paper's defaults
    recipe: ClassVar[dict[str, dict[str, Any]]] = {
        "optim": {"batch_size": 64, "seed": 42, "warmup_steps": 0},
        "loss": {"alpha": 100.0},
        "run": {"amp": False},
    }
    #: CE + alpha * temporal + beta * spatial, their terms
    losses = staticmethod(compute_authors_losses)
    #: what the reported δ (their fusion weights) means: the results and delta.png say it
    delta_note: ClassVar[str] = (
        "constant by construction: the authors' fusion weights come from their 'sentence', CLIP's start-token "
        "output, the same vector for every question (CLIP's text attention is causal), so they cannot depend "
        "on the question or its type"
    )

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, p = cfg.dim, cfg.dropout
        # their dropout sites, p everywhere: the attention weights, the FFN's hidden state, both residuals
        block = {"dim": d, "heads": cfg.heads, "ffn_dim": cfg.ffn_dim, "dropout": p}
        sites = {"attn_dropout": p, "ffn_dropout": p}
        self.audio_proj = nn.Linear(cfg.audio_dim, d)
        self.visual_proj = nn.Linear(d, d)
        # the position embedding is an nn.Embedding in their code: N(0, 1)
        self.time = AudioTimeAttention(d, cfg.max_seconds, cfg.ffn_dim, p, position_std=1.0, **sites)
        self.avcm_audio, self.avcm_visual = (CrossAttentionBlock(**block, **sites) for _ in range(2))
        self.fuse_audio, self.fuse_visual = (CrossAttentionBlock(**block, **sites) for _ in range(2))
        self.weights = nn.Linear(d, 2)
        self.head = AttFlat(d, cfg.n_answers, p)
        for layer in (self.time, self.avcm_audio, self.avcm_visual, self.fuse_audio, self.fuse_visual):
            their_init(layer)

    def forward(self, batch: Batch) -> AuthorsOutput:
        """Answer logits, the fusion weights as δ (visual, audio), and the inputs of both loss terms."""
        theirs = self.layout(batch)
        patches, audio, words, sentence = prepare_inputs(self.cfg, self.head.classifier.weight.dtype, theirs)
        seconds_mask, words_mask = batch.seconds_mask, theirs.words_mask
        b, t, n, d = patches.shape
        patches = self.visual_proj(patches)  # (B, T, N, D)
        audio = self.time(self.audio_proj(audio), seconds_mask)  # (B, T, D)
        temporal = FnacInputs(audio, patches, seconds_mask)
        mined_p = self.avcm_visual(patches.view(b, t * n, d), words, words_mask)  # (B, T*N, D)
        mined_a = self.avcm_audio(audio, words, words_mask)  # (B, T, D)
        spatial = AuthorsSpatialInputs(sentence, mined_p.view(b, t, n, d), mined_a, seconds_mask)
        patch_mask = seconds_mask[:, :, None].expand(b, t, n).reshape(b, t * n)  # (B, T*N)
        by_audio = self.fuse_audio(words, mined_a, seconds_mask)  # (B, M, D)
        by_visual = self.fuse_visual(words, mined_p, patch_mask)  # (B, M, D)
        w = self.weights(sentence).relu().softmax(dim=-1)  # (B, 2): (audio, visual)
        fused = w[:, 0, None, None] * by_audio + w[:, 1, None, None] * by_visual  # (B, M, D)
        logits = self.head(fused, words_mask)  # (B, C)
        # δ as (visual, audio), the order evaluation reports
        return AuthorsOutput(logits=logits, delta=w.flip(-1), temporal=temporal, spatial=spatial)

    @staticmethod
    def layout(batch: Batch) -> Batch:
        """The store's layout turned into theirs: the sentence is the start token's output (stored row
        0, the same for every question), the words are text positions 1, 2, ... (rows 1..), and the mask
        keeps positions 1..n, n = the question's word count (`batch.template_words`).

        Their code reads CLIP's output at all 77 positions; the store keeps the L real tokens, which
        suffices: n <= L - 2 (each word is at least one BPE token), so positions 1..n are stored, and the
        positions after n change no logit (masked keys in AVCM, weight 0 in AttFlat; as fusion queries each
        one's output depends only on itself), so those after the batch's largest n are dropped here.
        """
        if batch.template_words is None:
            raise ValueError(
                "the authors model needs batch.template_words: the word count n of each question"
            )
        stored = batch.words_mask[:, 1:]  # (B, L-1): positions 1.. that the store holds
        steps = torch.arange(stored.shape[1], device=stored.device)  # (L-1,)
        mask = stored & (steps[None, :] < batch.template_words[:, None])  # (B, L-1): positions 1..n
        m = int(mask.any(dim=0).nonzero().max()) + 1  # the batch's largest n
        words = batch.words[:, 1 : m + 1]  # (B, M, D), M = m
        return dataclasses.replace(batch, words=words, words_mask=mask[:, :m], sentence=batch.words[:, 0])
