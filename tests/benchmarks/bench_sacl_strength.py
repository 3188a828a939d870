"""SACL's strength at the paper's shapes: the gradient norm each loss term sends to the shared parameters.

A script, not a test: it prints a table. At T = 60 seconds, 49 patches, D = 512 (full width, the recipe's
batch), on generated scenes, it measures for the cross-entropy, α·L_temp and β·L_spat (each variant's
weights) the gradient norm on the parameters they share (the projections, the time attention, the AVCM
blocks), at initialisation and again after one epoch of Adam at lr 1e-4; eval mode (no dropout draws).
It also prints how much of L_spat the count of positive patches alone explains: per second,
log(N / K) with K positives is the loss when every patch's softmax value is equal, which at φ = 0.019
and τ = 0.4 they nearly are (the values lie within a few hundredths of each other).

    python tests/benchmarks/bench_sacl_strength.py                   # paper, 256 questions, batch 32
    python tests/benchmarks/bench_sacl_strength.py --variant authors  # their weights and batch 64
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

from avaf.train.config import LossConfig, ModelConfig
from avaf.train.inputs import Batch
from avaf.train.model import build_model
from avaf.train.variants import model_class

T, N, D, AUDIO, M = 60, 49, 512, 128, 12  # seconds, patches, width, VGGish width, words per question
KINDS = 6  # instruments: answers 0..5 ("which one sounds"); places 6..8 ("where is X": left/middle/right)
GROUPS = {  # the shared parameters, by name prefix, per variant
    "paper": {"projections": ("tacl.",), "time attention": ("time.",), "AVCM": ("avcm.",)},
    "authors": {
        "projections": ("audio_proj.", "visual_proj."),
        "time attention": ("time.",),
        "AVCM": ("avcm_",),
    },
}


def vocabulary(seed: int = 1234) -> dict[str, torch.Tensor]:
    """Fixed vectors: each instrument's look and sound, each patch's place, each question kind's words."""
    g = torch.Generator().manual_seed(seed)
    return {
        "look": torch.randn(KINDS, D, generator=g),
        "sound": torch.randn(KINDS, AUDIO, generator=g) * 2,
        "place": torch.randn(N, D, generator=g),
        "kind": torch.randn(2, M, D, generator=g),  # 0: "which instrument is sounding?", 1: "where is <X>?"
        "name": torch.randn(KINDS, D, generator=g),  # the instrument named by a "where" question
    }


def scenes(b: int, seed: int, vocab: dict, variant: str) -> tuple[Batch, torch.Tensor]:
    """b questions on b generated videos: two instruments on two patches of different columns, one sounding
    for a block of seconds. Half ask which one sounds (audio), half where a named one is (place)."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.stack([torch.randperm(KINDS, generator=g)[:2] for _ in range(b)])  # (B, 2)
    where = torch.stack([torch.randperm(N, generator=g)[:2] for _ in range(b)])  # (B, 2)
    visual = torch.randn(b, T, N + 1, D, generator=g) * 0.5
    visual[:, :, 1:] += vocab["place"]
    audio = torch.randn(b, T, AUDIO, generator=g) * 0.5
    for i in range(b):
        for j in range(2):
            visual[i, :, 1 + where[i, j]] += vocab["look"][pick[i, j]]
        start = int(torch.randint(0, T - T // 6 + 1, (1,), generator=g))  # sounding for T / 6 seconds
        audio[i, start : start + T // 6] += vocab["sound"][pick[i, 0]]
    kind = torch.arange(b) % 2
    named = pick[torch.arange(b), torch.randint(0, 2, (b,), generator=g)]  # (B,)
    column = where[torch.arange(b), (pick == named[:, None]).int().argmax(1)] % 7 * 3 // 7  # 7x7 grid
    answers = torch.where(kind == 0, pick[:, 0], KINDS + column)
    words = vocab["kind"][kind] + torch.randn(b, M, D, generator=g) * 0.1  # (B, M, D)
    words[kind == 1, 3] += vocab["name"][named[kind == 1]]
    if variant == "authors":  # their layout: the start token first, the same for every question
        words = torch.cat((vocab["kind"][0, :1].expand(b, 1, D), words), dim=1)
    batch = Batch(
        visual=visual.half(),
        audio=audio.half(),
        seconds_mask=torch.ones(b, T, dtype=torch.bool),
        words=words.half(),
        words_mask=torch.ones(b, words.shape[1], dtype=torch.bool),
        sentence=words.mean(dim=1).half(),
        template_words=torch.full((b,), M),
    )
    return batch, answers


def term_norms(model, batch: Batch, answers: torch.Tensor, cfg: LossConfig, variant: str) -> dict[str, dict]:
    """Per term (CE, α·temporal, β·spatial): its value and its gradient norm on each group of shared
    parameters, in eval mode."""
    model.eval()
    losses = model.losses(model(batch), answers, cfg)
    weighted = {"CE": losses["ce"], "α·L_temp": cfg.alpha * losses["temporal"]}
    weighted["β·L_spat"] = cfg.beta * losses["spatial"]
    named = list(model.named_parameters())
    rows = {}
    for term, value in weighted.items():
        grads = torch.autograd.grad(value, [p for _, p in named], retain_graph=True, allow_unused=True)
        rows[term] = {"value": float(value.detach())}
        for group, prefixes in GROUPS[variant].items():
            sq = sum(
                float(g.pow(2).sum())
                for (n, _), g in zip(named, grads)
                if g is not None and n.startswith(prefixes)
            )
            rows[term][group] = math.sqrt(sq)
    return rows


def count_share(model, batch: Batch, cfg: LossConfig, variant: str) -> tuple[float, float]:
    """The mean number of positive patches per second and SACL's value if every patch's softmax value
    were equal, mean_t log(N / K_t), summed over the two terms (question and audio); the threshold is the
    variant's (paper >, authors >=)."""
    import torch.nn.functional as F

    model.eval()
    with torch.no_grad():
        out = model(batch)
        sentence, patches, audio = out.spatial.sentence, out.spatial.patches, out.spatial.audio
        counts, value = [], 0.0
        for query in (sentence[:, None].expand(-1, T, -1), audio):
            s = F.cosine_similarity(query[:, :, None], patches, dim=-1).softmax(dim=-1)  # (B, T, N)
            positive = s >= cfg.sacl_phi if variant == "authors" else s > cfg.sacl_phi  # (B, T, N)
            k = positive.sum(dim=-1).clamp_min(1).float()  # (B, T)
            counts.append(k.mean())
            value += float(torch.log(N / k).mean())
    return float(torch.stack(counts).mean()), value


def one_epoch(model, variant: str, questions: int, batch_size: int, cfg: LossConfig, vocab: dict) -> float:
    """Adam at lr 1e-4 over `questions` generated questions (train mode); returns the seconds taken."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    start = time.perf_counter()
    for step in range(questions // batch_size):
        batch, answers = scenes(batch_size, 1000 + step, vocab, variant)
        losses = model.losses(model(batch), answers, cfg)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        print(
            f"  step {step + 1}: " + ", ".join(f"{k} {v.item():.4f}" for k, v in losses.items()), flush=True
        )
    return time.perf_counter() - start


def print_table(variant: str, when: dict[str, dict]) -> None:
    groups = list(GROUPS[variant])
    print(f"| {variant} | term | value | " + " | ".join(f"‖g‖ {g}" for g in groups) + " |")
    print("|---|---|---:|" + "---:|" * len(groups))
    for moment, rows in when.items():
        for term, row in rows.items():
            cells = " | ".join(f"{row[g]:.2e}" for g in groups)
            print(f"| {moment} | {term} | {row['value']:.4f} | {cells} |")
        ratio = " | ".join(f"{rows['β·L_spat'][g] / rows['CE'][g]:.1e}" for g in groups)
        print(f"| {moment} | β·L_spat / CE | | {ratio} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="paper", choices=["paper", "authors"])
    p.add_argument("--questions", type=int, default=256, help="generated training questions (one epoch)")
    p.add_argument("--batch", type=int, default=None, help="default: the variant's recipe (32, 64)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    recipe = model_class(args.variant).recipe
    batch_size = args.batch or recipe.get("optim", {}).get("batch_size", 32)
    cfg = LossConfig(**recipe.get("loss", {}))
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant=args.variant))
    vocab = vocabulary()
    probe, answers = scenes(batch_size, 0, vocab, args.variant)  # the batch every measurement uses
    when = {"init": term_norms(model, probe, answers, cfg, args.variant)}
    shares = {"init": count_share(model, probe, cfg, args.variant)}
    seconds = one_epoch(model, args.variant, args.questions, batch_size, cfg, vocab)
    when["after 1 epoch"] = term_norms(model, probe, answers, cfg, args.variant)
    shares["after 1 epoch"] = count_share(model, probe, cfg, args.variant)
    print(
        f"\n{args.variant}: T {T}, N {N}, D {D}, batch {batch_size}, alpha {cfg.alpha}, beta {cfg.beta}, ",
        end="",
    )
    print(
        f"phi {cfg.sacl_phi}, tau {cfg.sacl_tau}; epoch of {args.questions} questions in {seconds:.0f} s, ",
        end="",
    )
    print(f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    print_table(args.variant, when)
    for moment, (k, value) in shares.items():
        spatial = when[moment]["β·L_spat"]["value"] / cfg.beta
        print(f"{moment}: {k:.1f} positive patches per second of 49; L_spat {spatial:.4f}, ", end="")
        print(f"of which the count alone (sum of mean log(N/K) over both terms) {value:.4f}")


if __name__ == "__main__":
    main()
