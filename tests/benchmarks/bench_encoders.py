"""Encoder throughput: CLIP ViT-B/32 frames/s and VGGish audio-seconds/s (random weights: speed only).

Run: python tests/benchmarks/bench_encoders.py [--device cuda] [--precision fp16] [--frames 64]
Prints numbers, asserts nothing (not collected by pytest).
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch

from avaf.extract.encoders.clip_encoder import load_clip
from avaf.extract.encoders.vggish_encoder import load_vggish, log_mel_examples

log = logging.getLogger("bench_encoders")


def _timed(fn, repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--frames", type=int, default=16, help="frames per CLIP call (one batch)")
    p.add_argument("--seconds", type=int, default=60, help="audio seconds per VGGish call")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    log.info(
        "torch %s, %d threads, device %s, %s",
        torch.__version__,
        torch.get_num_threads(),
        args.device,
        args.precision,
    )

    clip = load_clip(
        "ViT-B-32", "random", device=args.device, precision=args.precision, batch_size=args.frames
    )
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, 224, 224, 3), dtype=np.uint8)
    s = _timed(lambda: clip.encode_images(frames), args.repeats)
    log.info("CLIP ViT-B/32 images: %.1f frames/s (%d frames in %.3f s)", args.frames / s, args.frames, s)
    questions = [f"What is the instrument on the left of the {i}th violin?" for i in range(64)]
    s = _timed(lambda: clip.encode_text(questions), args.repeats)
    log.info("CLIP ViT-B/32 text: %.1f questions/s", len(questions) / s)

    vggish = load_vggish("random", device=args.device, precision=args.precision)
    audio = np.random.default_rng(1).uniform(-1, 1, (args.seconds, 16000)).astype(np.float32)
    s = _timed(lambda: log_mel_examples(audio), args.repeats)
    log.info("VGGish log-mel front end: %.0f audio-seconds/s", args.seconds / s)
    s = _timed(lambda: vggish.encode(audio), args.repeats)
    log.info(
        "VGGish (front end + network): %.1f audio-seconds/s (%d s in %.3f s)",
        args.seconds / s,
        args.seconds,
        s,
    )


if __name__ == "__main__":
    main()
