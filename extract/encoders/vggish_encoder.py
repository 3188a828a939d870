"""Frozen VGGish audio encoder: one 128-D embedding per second, aligned with the frames (DESIGN.md §2-3).

Front end: the log-mel of torchvggish's `vggish_input.waveform_to_examples`, reproduced (not called): 16 kHz,
400-sample periodic Hann window, hop 160, FFT 512, magnitude, 64 HTK mel bands 125-7500 Hz (DC bin zeroed),
log(mel + 0.01), examples of 96 frames x 64 bands. One example per second instead of every 0.96 s:
example t covers samples [16000 t, 16000 t + 15600) (96 STFT frames: 0.96 s of hops, 0.975 s of samples), so
it is frames 100 t .. 100 t + 95 of the reference's log-mel of the whole waveform, computed in float64 like
the reference. Missing samples (audio under 0.975 s, or a short last second) are zeros, never an error.

Network: torchvggish's VGG (its `make_layers` and `VGG` with `postprocess=False`, so the constructor downloads
nothing), state-dict keys as in the released `vggish-10086976.pth`. The output is the raw embedding after the
last ReLU (non-negative, no PCA / quantisation), as the AVQA literature uses.

Usage:
    enc = load_vggish("default", device="cuda")      # or a local .pth/.safetensors, or "random"
    feats = enc.encode(audio)                         # audio: (T, 16000) per-second rows or a 1-D waveform
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torchvggish.torchvggish import VGG, make_layers

from avaf.extract.encoders.batching import pad_batch
from avaf.extract.encoders.weights import (
    OFFLINE_FIX,
    VGGISH_FILENAME,
    WeightsFileError,
    WeightsUnavailable,
    check_precision,
    download_vggish,
    no_network_error,
    precision_autocast,
    state_dict_sha256,
    torch_hub_vggish_path,
)
from avaf.shared.store.schema import SAMPLE_RATE

log = logging.getLogger(__name__)

WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512
N_MELS = 64
FMIN, FMAX = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96
EXAMPLE_SAMPLES = (EXAMPLE_FRAMES - 1) * HOP + WINDOW  # 15600 samples feed the 96 frames of one example
EMBEDDING_DIM = 128


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(hz / 700.0)  # HTK


def mel_matrix() -> np.ndarray:
    """(257, 64) float64: spectrogram magnitudes @ this = mel energies, HTK triangles, DC bin zeroed."""
    bins_mel = _hz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1))[:, None]  # (257, 1)
    edges = np.linspace(_hz_to_mel(np.float64(FMIN)), _hz_to_mel(np.float64(FMAX)), N_MELS + 2)
    lo, mid, hi = edges[:-2], edges[1:-1], edges[2:]  # (64,) each
    up = (bins_mel - lo) / (mid - lo)  # (257, 64)
    down = (hi - bins_mel) / (hi - mid)
    weights = np.maximum(0.0, np.minimum(up, down))
    weights[0, :] = 0.0
    return weights


_MEL = torch.from_numpy(mel_matrix())  # (257, 64)
_HANN = torch.from_numpy(0.5 - 0.5 * np.cos(2 * np.pi / WINDOW * np.arange(WINDOW)))  # periodic, (400,)


def second_windows(audio: np.ndarray | Tensor, num_seconds: int | None = None) -> Tensor:
    """(T, 15600) float64: the samples of each second's example, zero-padded where audio is missing.

    audio: a 1-D 16 kHz waveform (T defaults to its whole seconds, at least 1), or (T, S) rows where row t
    starts at second t (the decoder's (T, 16000) layout; rows under 15600 samples are zero-padded).
    """
    a = torch.as_tensor(np.asarray(audio) if not isinstance(audio, Tensor) else audio).to(torch.float64)
    if a.ndim == 2:
        if num_seconds is not None and num_seconds != a.shape[0]:
            raise ValueError(f"audio has {a.shape[0]} rows (seconds) but num_seconds={num_seconds}")
        a = a[:, :EXAMPLE_SAMPLES]
        return nn.functional.pad(a, (0, EXAMPLE_SAMPLES - a.shape[1]))
    if a.ndim != 1:
        raise ValueError(f"audio must be a 1-D waveform or (T, samples) rows, got shape {tuple(a.shape)}")
    t = max(1, a.shape[0] // SAMPLE_RATE) if num_seconds is None else num_seconds
    need = (t - 1) * SAMPLE_RATE + EXAMPLE_SAMPLES
    a = nn.functional.pad(a[:need], (0, max(0, need - a.shape[0])))
    return a.unfold(0, EXAMPLE_SAMPLES, SAMPLE_RATE)  # (T, 15600)


def log_mel_examples(audio: np.ndarray | Tensor, num_seconds: int | None = None) -> Tensor:
    """(T, 96, 64) float32 log-mel examples, one per second (see `second_windows` for `audio`)."""
    x = second_windows(audio, num_seconds)  # (T, 15600)
    frames = x.unfold(-1, WINDOW, HOP) * _HANN  # (T, 96, 400)
    spec = torch.fft.rfft(frames, n=FFT).abs()  # (T, 96, 257)
    return torch.log(spec @ _MEL + LOG_OFFSET).float()  # (T, 96, 64)


def build_vggish() -> nn.Module:
    """torchvggish's VGG without PCA and without its constructor's download."""
    return VGG(make_layers(), postprocess=False)


def load_vggish(
    weights: str = "default",
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    *,
    weights_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    seed: int = 0,
) -> VGGishEncoder:
    """VGGish in eval mode. weights: "default" (torchvggish's release: from `weights_dir` when given, else
    torch.hub's cache, downloading it once), a local .pth/.bin/.safetensors state dict, or "random"
    (random initialisation from `seed`, for tests and offline smoke runs)."""
    check_precision(precision)
    path = find_weights(weights, weights_dir)
    if path is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_vggish()
    else:
        model = _load_file(path)
    sha = state_dict_sha256(model.state_dict())
    label = weights if path is None or weights == "default" else path.name
    log.info("VGGish (%s): sha256=%s", label, sha[:12])
    model = model.to(device).eval().requires_grad_(False)
    return VGGishEncoder(
        model,
        weights=label,
        weights_file=path,
        weights_sha256=sha,
        precision=precision,
        batch_size=batch_size,
    )


def find_weights(weights: str, weights_dir: str | os.PathLike | None = None) -> Path | None:
    """The file `load_vggish` will read (None: random), found as it finds it (downloaded once if it must be),
    nothing loaded."""
    if weights == "random":
        return None
    if weights != "default":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"VGGish weights {path}: no such file (use 'default', a file, or 'random')"
            )
        return path
    if weights_dir is not None:
        path = Path(weights_dir) / VGGISH_FILENAME
        if not path.is_file():
            raise WeightsUnavailable(
                f"{path} not found: the weights folder {weights_dir} has no VGGish weights. {OFFLINE_FIX}"
            )
        return path
    path = torch_hub_vggish_path()
    if not path.is_file():
        try:
            download_vggish(path)
        except Exception as e:  # URLError offline, HTTP errors, a hash mismatch: one message with the fix
            raise no_network_error("VGGish weights", [str(path)], e) from e
    return path


def _load_file(path: Path) -> nn.Module:
    """VGGish with the weights of `path` (built on the meta device: no time spent on a random init)."""
    with torch.device("meta"):
        model = build_vggish()
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k: v.float() for k, v in sd.items()}
        model.load_state_dict(sd, strict=True, assign=True)
    except Exception as e:
        raise WeightsFileError(
            f"{path} is not a VGGish state dict in torchvggish's layout (vggish-10086976.pth keys "
            f"features.N.* / embeddings.N.*): {type(e).__name__}: {_one_line(e)}"
        ) from e
    return model


def _one_line(e: BaseException, limit: int = 600) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + " ..."


class VGGishEncoder:
    """A loaded VGGish and its front end: audio in, (T, 128) non-negative float32 out."""

    def __init__(
        self,
        model: nn.Module,
        *,
        weights: str,
        weights_file: Path | None,
        weights_sha256: str,
        precision: str,
        batch_size: int,
    ) -> None:
        self.model = model
        self.weights = weights
        self.weights_file = weights_file
        self.weights_sha256 = weights_sha256
        self.precision = precision
        self.batch_size = batch_size
        self.device = next(model.parameters()).device

    @property
    def random(self) -> bool:
        return self.weights == "random"

    def _autocast(self) -> contextlib.AbstractContextManager:
        return precision_autocast(self.device, self.precision)

    @torch.inference_mode()
    def encode_examples(self, examples: Tensor) -> Tensor:
        """(B, 96, 64) log-mel examples -> (B, 128) float32 on the CPU, in batches of `batch_size`."""
        if len(examples) == 0:
            return torch.zeros(0, EMBEDDING_DIM)
        out = []
        for chunk in examples.split(self.batch_size):
            # every pass has batch_size examples, padded, so a second never depends on its batch-mates
            n = len(chunk)
            x = pad_batch(chunk, self.batch_size).to(self.device, torch.float32)[:, None]  # (B, 1, 96, 64)
            with self._autocast():
                out.append(self.model(x)[:n].float().cpu())  # (B, 128)
        return torch.cat(out)

    def encode(self, audio: np.ndarray | Tensor, num_seconds: int | None = None) -> Tensor:
        """(T, 128) for one video: audio is (T, S) per-second rows or a 1-D 16 kHz waveform (+ optional T)."""
        return self.encode_examples(log_mel_examples(audio, num_seconds))

    def encode_batch(
        self, audios: Sequence[np.ndarray | Tensor], num_seconds: Sequence[int | None] | None = None
    ) -> list[Tensor]:
        """`encode` for many videos at once: all their seconds go through the network in shared batches."""
        ts = list(num_seconds) if num_seconds is not None else [None] * len(audios)
        examples = [log_mel_examples(a, t) for a, t in zip(audios, ts, strict=True)]
        feats = self.encode_examples(torch.cat(examples)) if examples else torch.zeros(0, EMBEDDING_DIM)
        return list(feats.split([len(e) for e in examples]))

    def config_dict(self) -> dict:
        """What determines the numbers (no machine-specific paths: shards from different nodes must agree)."""
        return {
            "name": "vggish",
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "random": self.random,
            "embedding": "raw, after the last ReLU (no PCA, no quantisation)",
            "sample_rate": SAMPLE_RATE,
            "example_hop_s": 1.0,
            "example_frames": EXAMPLE_FRAMES,
            "log_mel": {
                "window": WINDOW,
                "hop": HOP,
                "fft": FFT,
                "window_fn": "periodic hann",
                "mel_bands": N_MELS,
                "fmin": FMIN,
                "fmax": FMAX,
                "mel_scale": "htk",
                "log_offset": LOG_OFFSET,
            },
            "precision": self.precision,
        }
