"""Generated 10-second scenes at the model's full width, whose questions need time order or place.

Not a test file: `test_order_scenes.py` (slow) and `benchmarks/bench_order.py` import it. Every video holds three
instruments of K kinds, each at its own column of a SIDE x SIDE patch grid (two patches of it) and each
sounding one block of 2-3 seconds, the blocks in random order with silent gaps. Features are in the store's
layout at CLIP ViT-B/32's width (D = 512) and VGGish's (128), at their scales:

* a patch token carries its place (a fixed vector per patch, as CLIP's patch tokens carry where they are), the
  visual signature of the instrument standing there, a "playing" cue while it sounds, and noise;
* a second of audio is the ReLU of the sounding instruments' audio signatures, or a fixed silence vector;
* a question's words are fixed word vectors; the named instrument's word is its visual signature (CLIP aligns
  a name with its image); the sentence is their mean.

Kinds: "first" / "second" ("What is the first / second instrument that comes in?"), "where_first" ("Where
is the first sounding instrument?": its column), "where" ("Where is the <Object>?"). Played backwards, the
first becomes the last: `backwards` gives the answers a model that uses order must switch to.
"""

from __future__ import annotations

import dataclasses

import torch

from avaf.train.config import LossConfig
from avaf.train.inputs import Batch
from avaf.train.model import build_model

T, D, AUDIO, M, SIDE = 10, 512, 128, 8, 3
N = SIDE * SIDE
INSTRUMENTS = 8
REGIONS = ("left", "middle", "right")  # answer INSTRUMENTS + column
N_ANSWERS = INSTRUMENTS + len(REGIONS)
KINDS = ("first", "second", "where_first", "where")
ORDER_KINDS = ("first", "where_first")  # those whose answer changes when the video is played backwards
TEMPLATES = {
    "first": "what is the first instrument that comes in".split(),
    "second": "what is the second instrument that comes in".split(),
    "where_first": "where is the first sounding instrument".split(),
    "where": "where is the <obj>".split(),
}
SCALE = 0.4  # per-dimension std of a token's parts: norms near CLIP's projected tokens (~10)


def _vocabulary(seed: int = 1234) -> dict:
    """Fixed vectors for the scenes' constants, the same in every call (as a frozen encoder's are)."""
    g = torch.Generator().manual_seed(seed)
    words = sorted({w for t in TEMPLATES.values() for w in t} - {"<obj>"})
    return {
        "audio": torch.randn(INSTRUMENTS, AUDIO, generator=g),
        "silence": torch.relu(torch.randn(AUDIO, generator=g)) * 0.5,
        "visual": SCALE * torch.randn(INSTRUMENTS, D, generator=g),
        "place": SCALE * torch.randn(N, D, generator=g),
        "playing": 0.5 * SCALE * torch.randn(D, generator=g),
        "cls": SCALE * torch.randn(D, generator=g),
        "words": {w: SCALE * torch.randn(D, generator=g) for w in words},
    }


VOCAB = _vocabulary()


@dataclasses.dataclass
class Video:
    """One scene: instruments in onset order, their columns, onsets and lengths (seconds)."""

    instruments: list[int]
    columns: list[int]
    onsets: list[int]
    lengths: list[int]
    patches: list[list[int]]

    def answer(self, kind: str, named: int, backwards: bool = False) -> int:
        order = (
            sorted(range(3), key=lambda i: -(self.onsets[i] + self.lengths[i])) if backwards else [0, 1, 2]
        )
        i = {"first": order[0], "second": order[1], "where_first": order[0], "where": named}[kind]
        return self.instruments[i] if kind in ("first", "second") else INSTRUMENTS + self.columns[i]


def _video(g: torch.Generator) -> Video:
    lengths = torch.randint(2, 4, (3,), generator=g).tolist()
    cuts = sorted(torch.randint(0, T - sum(lengths) + 1, (3,), generator=g).tolist())  # silence before each
    onsets = [cuts[i] + sum(lengths[:i]) for i in range(3)]
    columns = torch.randperm(3, generator=g).tolist()
    patches = [[r * SIDE + c for r in torch.randperm(SIDE, generator=g)[:2].tolist()] for c in columns]
    return Video(torch.randperm(INSTRUMENTS, generator=g)[:3].tolist(), columns, onsets, lengths, patches)


def _features(v: Video, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(visual tokens (T, 1 + N, D), audio (T, 128)) of one scene."""
    visual = VOCAB["place"].expand(T, N, D) + 0.1 * torch.randn(T, N, D, generator=g)
    sound = torch.zeros(T, AUDIO)
    for k, patches, onset, length in zip(v.instruments, v.patches, v.onsets, v.lengths):
        sound[onset : onset + length] += VOCAB["audio"][k]
        for p in patches:  # basic indexing: an index list in `+=` costs ~15 ms a call
            visual[:, p] += VOCAB["visual"][k]
            visual[onset : onset + length, p] += VOCAB["playing"]
    heard = (sound != 0).any(dim=1, keepdim=True)  # (T, 1)
    audio = torch.where(heard, torch.relu(sound), VOCAB["silence"]) + 0.05 * torch.rand(T, AUDIO, generator=g)
    return torch.cat((VOCAB["cls"].expand(T, 1, D), visual), dim=1), audio


def generate(videos: int, seed: int, kinds: tuple[str, ...] = KINDS) -> dict:
    """One question of each kind per video: per video "visual" and "audio"; per question "video" (its row),
    "words", "words_mask", "sentence", "answers", "backwards" (the answers on the video played backwards)
    and "kind" (index into KINDS)."""
    g = torch.Generator().manual_seed(seed)
    rows: dict[str, list] = {
        k: [] for k in ("visual", "audio", "video", "words", "answers", "backwards", "kind")
    }
    for i in range(videos):
        v = _video(g)
        visual, audio = _features(v, g)
        rows["visual"].append(visual)
        rows["audio"].append(audio)
        named = int(torch.randint(0, 3, (1,), generator=g))
        for kind in kinds:
            template = TEMPLATES[kind]
            vectors = [
                VOCAB["visual"][v.instruments[named]] if w == "<obj>" else VOCAB["words"][w] for w in template
            ]
            words = torch.zeros(M, D)
            words[: len(vectors)] = torch.stack(vectors) + 0.05 * torch.randn(len(vectors), D, generator=g)
            rows["words"].append(words)
            rows["video"].append(i)
            rows["answers"].append(v.answer(kind, named))
            rows["backwards"].append(v.answer(kind, named, backwards=True))
            rows["kind"].append(KINDS.index(kind))
    data = {k: torch.stack(rows[k]) for k in ("visual", "audio", "words")}
    data |= {k: torch.tensor(rows[k]) for k in ("video", "answers", "backwards", "kind")}
    data["words_mask"] = data["words"].abs().sum(dim=2) > 0  # (Q, M)
    data["sentence"] = data["words"].sum(dim=1) / data["words_mask"].sum(dim=1, keepdim=True)  # (Q, D)
    return data


def batch(data: dict, index, backwards: bool = False) -> Batch:
    """The model's input for questions `index`; `backwards`: their videos played backwards."""
    video = data["video"][index]
    visual, audio = data["visual"][video], data["audio"][video]  # (B, T, 1 + N, D), (B, T, 128)
    if backwards:
        visual, audio = visual.flip(1), audio.flip(1)
    words, mask = data["words"][index], data["words_mask"][index]
    seconds = torch.ones(len(words), T, dtype=torch.bool)
    return Batch(visual, audio, seconds, words, mask, data["sentence"][index])


def loss_config() -> LossConfig:
    """The paper's loss with SACL's threshold just under 1/N, as 0.019 is just under 1/49."""
    return LossConfig(sacl_phi=1 / N - 0.002)


def train(
    cfg,
    data: dict,
    epochs: int,
    lr: float,
    decay_at: int = 0,
    batch_size: int = 32,
    seed: int = 0,
    warmup: int = 0,
):
    """Adam as avaf-train runs it (lr x0.1 at epoch `decay_at` when > 0, linear warm-up over the first
    `warmup` steps when > 0), shuffled epochs; eval mode after."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=decay_at or epochs + 1, gamma=0.1)
    g = torch.Generator().manual_seed(seed)
    n, step = len(data["answers"]), 0
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=g)
        for a in range(0, n, batch_size):
            index = order[a : a + batch_size]
            losses = model.losses(model(batch(data, index)), data["answers"][index], loss_config())
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            if step < warmup:
                for group in opt.param_groups:
                    group["lr"] = sched.get_last_lr()[0] * (step + 1) / warmup
            elif step == warmup > 0:
                for group in opt.param_groups:
                    group["lr"] = sched.get_last_lr()[0]
            opt.step()
            step += 1
        sched.step()
    return model.eval()


@torch.no_grad()
def answers(model, data: dict, backwards: bool = False) -> torch.Tensor:
    """The model's answer to every question, 64 at a time."""
    n = len(data["answers"])
    return torch.cat(
        [model(batch(data, slice(a, a + 64), backwards)).logits.argmax(1) for a in range(0, n, 64)]
    )


def table(model, data: dict) -> dict[str, dict[str, float]]:
    """Per kind: accuracy as played, and how often the answer on the video played backwards is still the
    forward answer (a model blind to order keeps it; one that uses order switches to `backwards`)."""
    forward, reverse = answers(model, data), answers(model, data, backwards=True)
    out = {}
    for i, kind in enumerate(KINDS):
        rows = data["kind"] == i
        if rows.any():
            right = (forward == data["answers"])[rows].float().mean().item()
            kept = (reverse == data["answers"])[rows].float().mean().item()
            switched = (reverse == data["backwards"])[rows].float().mean().item()
            majority = data["answers"][rows].bincount().max().item() / int(rows.sum())
            out[kind] = {
                "played": right,
                "backwards_kept": kept,
                "backwards_switched": switched,
                "majority": majority,
            }
    return out
