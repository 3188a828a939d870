"""Generated features whose questions only time order, or only place, can answer (DESIGN.md §5 "Time order").

Not a test file: `test_time_order.py` and `benchmarks/bench_alpha.py` import it. Every sample is a tiny
scene in the model's input layout (CLS + N patches per second, VGGish-width audio, word vectors, a sentence):

* instruments: I kinds, each with an audio signature (audio_dim) and a visual signature (D);
* place: patch n carries a fixed vector p_n in every video, as CLIP's patch tokens carry where they are; the
  N patches form a grid of `ROWS` rows, and column c of it is the answer "left" / "middle" / "right";
* a visible instrument adds its visual signature to its patch in every second, and a "playing" cue while it
  sounds; a sounding instrument adds its audio signature to the audio of that second.

Question kinds (`KINDS`), each with its own template words, so the sentence names the kind:

* "first", "second", "third": "What is the <TH> instrument that comes in?" over 3 kinds, each sounding
  one block of 1-2 seconds, blocks apart and in random order. Any reordering of the blocks leaves the
  set of seconds the same, so a model blind to order answers at 1/3, the prior among the three heard.
* "before", "after": "Which instrument makes sounds <BA> the <Object>?", the named one being the middle
  block (so one answer is unique); blind: 1/2 (the two others).
* "twin": "Which <Object> makes the sound first?", two instruments of one kind in two columns, each
  playing one block; the audio is the same whichever plays, so only the visual playing cue and its second
  tell "left" / "right" / "middle"; blind: 1/2.
* "where": "Where is the <Object>?", three kinds at three patches of three different columns, all silent
  and still: only the position-bearing content of the named kind's patch answers; prior 1/3.

    data = generate(n=2000, kinds=ORDER_KINDS, seed=0, seconds=6)   # {"visual", ..., "answers", "kind"}
    model = train(cfg, data, steps=300)                  # Adam, lr 1e-3 falling linearly to 0
    accuracy_by_kind(model, generate(600, ORDER_KINDS, seed=1, seconds=6), ORDER_KINDS)
"""

from __future__ import annotations

import torch

T, N, ROWS, D, AUDIO, M = 6, 3, 1, 32, 128, 6  # seconds, patches (1 x 3 grid), width, audio width, words
INSTRUMENTS = 6
PLACES = ("left", "middle", "right")  # answers INSTRUMENTS + column
N_ANSWERS = INSTRUMENTS + len(PLACES)
ORDER_KINDS = ("first", "second", "third", "before", "after")
KINDS = (*ORDER_KINDS, "twin", "where")
BLIND = {"first": 1 / 3, "second": 1 / 3, "third": 1 / 3, "before": 1 / 2, "after": 1 / 2, "twin": 1 / 2}
BLIND["where"] = 1 / 3  # the prior: any of the three columns
NOISE = 0.1
WORD_SCALE = 0.3


def _vocabulary(seed: int = 1234) -> dict[str, torch.Tensor]:
    """Fixed vectors for the scene's constants, the same in every call (as a frozen encoder's are)."""
    g = torch.Generator().manual_seed(seed)
    words = ["what", "which", "where", "is", "comes", "makes", "sounds", "the", "instrument", "first"]
    words += ["second", "third", "before", "after", "sound", "twin"]
    visual_sig = torch.randn(INSTRUMENTS, D, generator=g)
    return {
        "audio_sig": torch.randn(INSTRUMENTS, AUDIO, generator=g),
        "visual_sig": visual_sig,
        "names": visual_sig,  # a name's word vector is its image's: CLIP aligns text and image
        "place": torch.randn(N, D, generator=g),  # p_n: what a patch's position adds to its token
        "playing": torch.randn(D, generator=g),
        "cls": torch.randn(D, generator=g),
        **{f"w_{w}": torch.randn(D, generator=g) for w in words},
    }


VOCAB = _vocabulary()
TEMPLATES = {
    "first": ["what", "first", "instrument", "comes"],
    "second": ["what", "second", "instrument", "comes"],
    "third": ["what", "third", "instrument", "comes"],
    "before": ["which", "sounds", "before", "<obj>"],
    "after": ["which", "sounds", "after", "<obj>"],
    "twin": ["which", "<obj>", "makes", "sound", "first"],
    "where": ["where", "is", "the", "<obj>"],
}


def column(patch: int) -> int:
    return patch % (N // ROWS)


def _blocks(g: torch.Generator, count: int, seconds: int) -> list[tuple[int, int]]:
    """`count` disjoint blocks (onset, length 1-2) in time order, with random gaps, inside `seconds`."""
    lengths = (torch.randint(1, 3, (count,), generator=g)).tolist()
    while sum(lengths) > seconds:  # too long for a short clip: shorten the first block of 2
        lengths[lengths.index(2)] = 1
    slack = seconds - sum(lengths)  # silent seconds to spread before, between and after the blocks
    cuts = sorted(torch.randint(0, slack + 1, (count + 1,), generator=g).tolist())[:count]
    blocks, t = [], 0
    for i, length in enumerate(lengths):
        t += cuts[i] - (cuts[i - 1] if i else 0)
        blocks.append((t, length))
        t += length
    return blocks


def _scene(
    g: torch.Generator, kind: str, seconds: int
) -> tuple[list, list[tuple[int, int, int, int]], int, int]:
    """(question words, [(instrument, patch, onset, length)], answer, named instrument)."""
    if kind == "where":
        cols = torch.randperm(3, generator=g).tolist()
        kinds = torch.randperm(INSTRUMENTS, generator=g)[:3].tolist()
        rows = torch.randint(0, ROWS, (3,), generator=g).tolist()
        items = [(k, r * 3 + c, -1, 0) for k, r, c in zip(kinds, rows, cols)]
        named = int(torch.randint(0, 3, (1,), generator=g))
        return TEMPLATES[kind], items, INSTRUMENTS + cols[named], kinds[named]
    if kind == "twin":
        k = int(torch.randint(0, INSTRUMENTS, (1,), generator=g))
        cols = torch.randperm(3, generator=g)[:2].tolist()
        rows = torch.randint(0, ROWS, (2,), generator=g).tolist()
        blocks = _blocks(g, 2, seconds)
        items = [(k, r * 3 + c, *b) for r, c, b in zip(rows, cols, blocks)]
        return TEMPLATES[kind], items, INSTRUMENTS + cols[0], k
    kinds = torch.randperm(INSTRUMENTS, generator=g)[:3].tolist()  # in onset order
    patches = torch.randperm(N, generator=g)[:3].tolist()
    items = [(k, p, *b) for k, p, b in zip(kinds, patches, _blocks(g, 3, seconds))]
    answer = {"first": 0, "second": 1, "third": 2, "before": 0, "after": 2}[kind]
    return TEMPLATES[kind], items, kinds[answer], kinds[1]


def generate(
    n: int, kinds: tuple[str, ...] = KINDS, seed: int = 0, seconds: int = T
) -> dict[str, torch.Tensor]:
    """n samples of `seconds` seconds, kinds in turn; the model's input layout, plus "answers" and "kind"."""
    g = torch.Generator().manual_seed(seed)
    v, t = VOCAB, seconds
    visual = v["place"].expand(n, t, N, D) + NOISE * torch.randn(n, t, N, D, generator=g)
    visual = torch.cat((v["cls"].expand(n, t, 1, D), visual), dim=2)  # (n, T, 1 + N, D)
    audio = NOISE * torch.randn(n, t, AUDIO, generator=g)
    words = torch.zeros(n, M, D)
    words_mask = torch.zeros(n, M, dtype=torch.bool)
    answers = torch.zeros(n, dtype=torch.long)
    kind_index = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        kind_index[i] = i % len(kinds)
        template, items, answers[i], named = _scene(g, kinds[i % len(kinds)], seconds)
        for k, patch, onset, length in items:
            visual[i, :, 1 + patch] += v["visual_sig"][k]
            for second in range(onset, onset + length):
                visual[i, second, 1 + patch] += v["playing"]
                audio[i, second] += v["audio_sig"][k]
        vectors = [v["names"][named] if w == "<obj>" else v[f"w_{w}"] for w in template]
        words[i, : len(vectors)] = torch.stack(vectors) + NOISE * torch.randn(len(vectors), D, generator=g)
        words_mask[i, : len(vectors)] = True
    words = WORD_SCALE * words
    sentence = words.sum(dim=1) / words_mask.sum(dim=1, keepdim=True)  # (n, D): the kind and the name
    return {
        "visual": visual,
        "audio": audio,
        "seconds_mask": torch.ones(n, t, dtype=torch.bool),
        "words": words,
        "words_mask": words_mask,
        "sentence": sentence,
        "answers": answers,
        "kind": kind_index,
    }


INPUTS = ("visual", "audio", "seconds_mask", "words", "words_mask", "sentence")


def inputs(data: dict, index=slice(None)):
    """The model's `Batch` of the questions at `index`."""
    from avaf.train.inputs import Batch

    return Batch(**{k: data[k][index] for k in INPUTS})


def train(
    cfg,
    data: dict,
    steps: int,
    alpha: float = 1.0,
    beta: float = 0.2,
    lr: float = 1e-3,
    batch: int = 64,
    seed: int = 0,
):
    """Adam on eq. 14's loss over `data` for `steps` batches, lr falling linearly to 0; the model in eval mode.

    The linear fall keeps the last steps from the loss spikes Adam shows once the loss is near 0 (measured:
    at a constant lr a learned kind dropped for a few steps from 1.00 to 0.7-0.8 now and then).
    """
    from avaf.train.config import LossConfig
    from avaf.train.losses import compute_losses
    from avaf.train.model import build_model

    weights = LossConfig(alpha=alpha, beta=beta, sacl_phi=1 / N - 0.01, sacl_tau=0.4)
    torch.manual_seed(seed)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1 - step / steps)
    g = torch.Generator().manual_seed(seed)
    n = len(data["answers"])
    for _ in range(steps):
        index = torch.randint(0, n, (batch,), generator=g)
        out = model(inputs(data, index))
        loss = compute_losses(out, data["answers"][index], weights)
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def accuracy_by_kind(model, data: dict, kinds: tuple[str, ...]) -> dict[str, float]:
    predicted = model(inputs(data)).logits.argmax(dim=1)
    right = predicted == data["answers"]
    return {k: right[data["kind"] == i].float().mean().item() for i, k in enumerate(kinds)}
