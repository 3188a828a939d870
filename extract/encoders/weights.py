"""Encoder weights for offline machines: one folder, checksums, and the errors that say how to get them.

DESIGN.md §3 "Offline clusters": `fetch_default_weights(DIR)` (the `avaf-fetch-weights DIR` command) downloads
the default CLIP and VGGish weights once on a machine with network; copy DIR to the cluster and pass
`--weights-dir DIR` (Python: `weights_dir=DIR`) so the loaders read from it and never touch the network.

The folder holds, under fixed names (`clip_weights_filename`, `VGGISH_FILENAME`):

    open_clip-ViT-B-32-openai.safetensors   open_clip's CLIP state dict (fp32, safetensors, not TorchScript)
    vggish-10086976.pth                     torchvggish's released state dict, byte for byte
    weights.json                            one entry per file: model name, tag, quick_gelu, mean/std, sha256

Checksums (`state_dict_sha256`) are taken over the tensors actually loaded into a model, not over a file:
the same weights saved as .safetensors or .bin give the same checksum, and so does re-fetching them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch

from avaf.shared.files import atomic_path

log = logging.getLogger(__name__)

VGGISH_URL = "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
VGGISH_FILENAME = "vggish-10086976.pth"
VGGISH_HASH_PREFIX = "10086976"  # torch.hub's convention: the sha256 of the file starts with this
MANIFEST = "weights.json"
FETCH_COMMAND = "avaf-fetch-weights DIR"

OFFLINE_FIX = (
    f"Fix: on a machine with network run `{FETCH_COMMAND}` "
    "(Python: avaf.extract.encoders.weights.fetch_default_weights(DIR)), copy DIR to this machine and pass "
    "--weights-dir DIR (Python: weights_dir=DIR); or pass a local checkpoint file, or 'random' for a smoke run."
)


class WeightsUnavailable(RuntimeError):
    """The requested weights are neither on disk nor downloadable from here (usually: no network)."""


class WeightsFileError(ValueError):
    """A local weights file that cannot be loaded into the requested model; the message names the file."""


def no_network_error(what: str, tried: list[str], cause: BaseException | None) -> WeightsUnavailable:
    """The error for weights that are not on disk and could not be downloaded."""
    where = "; ".join(tried) if tried else "nowhere"
    reason = f"{type(cause).__name__}: {cause}" if cause is not None else "no download attempted"
    return WeightsUnavailable(
        f"{what}: not found on disk (looked in: {where}) and the download failed ({reason}). "
        f"This machine appears to have no network access. {OFFLINE_FIX}"
    )


PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")


def precision_autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """fp16/bf16 autocast for a frozen encoder (its weights stay fp32); nothing for fp32."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def connection_problem(url: str, timeout_s: float = 3.0) -> str | None:
    """Why no connection to the host of `url` (or to the HTTPS proxy that would carry it) opens, as the OS
    says it ("[Errno -2] Name or service not known"); None when one opens. One short attempt, no retries:
    an offline machine fails at once instead of through a download library's back-off."""
    import socket
    import urllib.request
    from urllib.parse import urlsplit

    host, port = urlsplit(url).hostname or url, 443
    proxy = urllib.request.getproxies().get("https")
    if proxy and not urllib.request.proxy_bypass(host):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parts.hostname or host, parts.port or 80
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return None
    except OSError as e:
        return str(e) or type(e).__name__


def network_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    """One quick connection attempt, so an offline machine fails at once instead of through a hub's retries."""
    return connection_problem(host, timeout_s) is None


def hub_url(repo: str, filename: str) -> str:
    """The address of a file of a Hugging Face hub repository (HF_ENDPOINT, where set, names the hub)."""
    from huggingface_hub.constants import ENDPOINT

    return f"{ENDPOINT.rstrip('/')}/{repo.strip('/')}/resolve/main/{filename}"


@contextlib.contextmanager
def hub_offline_unless_reachable():
    """Hugging Face hub in offline mode (cached files only, no retries) while the hub is unreachable."""
    import huggingface_hub.constants as hub

    before = hub.HF_HUB_OFFLINE
    hub.HF_HUB_OFFLINE = before or not network_reachable()
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = before


def clip_weights_filename(model_name: str, pretrained: str) -> str:
    """File name of a fetched open_clip checkpoint; `-quickgelu` variants share their base model's file."""
    base = model_name.removesuffix("-quickgelu").replace("/", "-")
    return f"open_clip-{base}-{pretrained}.safetensors"


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over sorted keys: name, dtype, shape and raw bytes of every tensor (any device or dtype)."""
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def is_torchscript(path: str | os.PathLike) -> bool:
    """True for a TorchScript archive (e.g. OpenAI's `ViT-B-32.pt`): a zip holding `code/` and `constants.pkl`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())


def convert_torchscript_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Save the state dict of a TorchScript CLIP archive (OpenAI's .pt) as safetensors loadable by `load_clip`.

    Loads `src` with `torch.jit.load`: only do this with a file you trust.
    """
    from safetensors.torch import save_file

    sd = torch.jit.load(str(src), map_location="cpu").state_dict()
    # ints that OpenAI stores as tensors, and the causal mask (a non-persistent buffer in open_clip)
    for key in ("input_resolution", "context_length", "vocab_size", "attn_mask"):
        sd.pop(key, None)
    dst = Path(dst)
    _atomic_save(lambda p: save_file({k: v.float().contiguous() for k, v in sd.items()}, str(p)), dst)
    return dst


_INITS = ("normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_")
_INITS += ("xavier_normal_", "constant_", "zeros_", "ones_", "orthogonal_")


@contextlib.contextmanager
def skip_init():
    """Make torch.nn.init a no-op while a model whose weights are loaded next is built (ViT-B/32: 1.5 s
    of random init saved). Not thread-safe: nothing else may build a model meanwhile in this process."""
    saved = {name: getattr(torch.nn.init, name) for name in _INITS}
    try:
        for name in _INITS:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def read_manifest(folder: str | os.PathLike) -> dict:
    """The `weights.json` of a fetched folder ({} when there is none)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def _write_manifest_entry(folder: Path, filename: str, entry: dict) -> None:
    manifest = read_manifest(folder)
    manifest[filename] = entry
    _atomic_save(lambda p: p.write_text(json.dumps(manifest, indent=2, sort_keys=True)), folder / MANIFEST)


def _atomic_save(write, dst: Path) -> None:
    """Write through `write(tmp_path)`, then rename: a killed fetch never leaves a truncated file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        write(tmp)


def torch_hub_vggish_path() -> Path:
    """Where `torch.hub.load_state_dict_from_url` caches the VGGish release (torchvggish's own cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGGISH_FILENAME


def download_vggish(dst: Path) -> None:
    """Download the VGGish release to `dst`, checking torch.hub's sha256 prefix."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(VGGISH_URL, str(dst), hash_prefix=VGGISH_HASH_PREFIX, progress=True)


def download_clip_state_dict(model_name: str, pretrained: str, quick_gelu: bool) -> dict[str, torch.Tensor]:
    """Download an open_clip tag (open_clip's own cache) and return its state dict as loaded into the model."""
    import open_clip

    model = open_clip.create_model(model_name, pretrained=pretrained, force_quick_gelu=quick_gelu)
    return model.state_dict()


@dataclass(frozen=True)
class WeightsFile:
    """One file of a weights folder: what it holds, the address a person would download it from, where the
    loaders read it, and how avaf downloads it there (the file and its weights.json entry)."""

    what: str  # "open_clip ViT-B-32 'openai'"
    url: str
    path: Path
    download: Callable[[Path], None]


def fetch(files: Mapping[str, WeightsFile]) -> tuple[dict[str, Path], dict[str, str]]:
    """Download every file not yet in place: ({name: path} of those in place, {name: why not, and how to
    place it by hand}). Each host is tried once, with one short connection, before any download: a host
    that cannot be reached fails its files at once, and no download library retries for a minute."""
    done: dict[str, Path] = {}
    failed: dict[str, str] = {}
    problems: dict[str, str | None] = {}
    for name, f in files.items():
        if f.path.is_file():
            done[name] = f.path
            continue
        host = urlsplit(f.url).hostname or f.url
        if host not in problems:
            problems[host] = connection_problem(f.url)
        problem = f"{host} cannot be reached ({problems[host]})" if problems[host] else None
        if problem is None:
            try:
                f.download(f.path)
                done[name] = f.path
                continue
            except Exception as e:  # any failure of the download is said on this file's line
                problem = f"the download failed ({type(e).__name__}: {' '.join(str(e).split())})"
        failed[name] = (
            f"{f.what}: not downloaded: {problem}. By hand: download {f.url} where it can be reached and save "
            f"it as {f.path}; avaf-extract --weights-dir {f.path.parent} then reads it"
        )
    return done, failed


def clip_weights_file(folder: str | os.PathLike, clip_model: str, clip_pretrained: str) -> WeightsFile:
    """The open_clip tag's checkpoint in `folder` (`clip_weights_filename`); its hub file is the same state
    dict (open_clip loads either)."""
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(clip_model, clip_pretrained)
    if not tag_cfg:
        raise ValueError(f"{clip_pretrained!r} is not an open_clip pretrained tag of {clip_model!r}")
    quick_gelu = bool(tag_cfg.get("quick_gelu", False)) or clip_model.endswith("-quickgelu")
    hub = tag_cfg.get("hf_hub", "")
    repo, name = hub.rstrip("/").rsplit("/", 1) if not hub.endswith("/") else (hub, "")
    url = hub_url(repo, name or "open_clip_model.safetensors") if hub else tag_cfg.get("url", "")

    def download(path: Path) -> None:
        sd = download_clip_state_dict(clip_model, clip_pretrained, quick_gelu)
        from safetensors.torch import save_file

        _atomic_save(lambda p: save_file({k: v.contiguous() for k, v in sd.items()}, str(p)), path)
        entry = {
            "kind": "open_clip",
            "model_name": clip_model,
            "pretrained": clip_pretrained,
            "quick_gelu": quick_gelu,
            "mean": list(tag_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            "std": list(tag_cfg.get("std", open_clip.OPENAI_DATASET_STD)),
            "sha256": state_dict_sha256(sd),
        }
        _write_manifest_entry(path.parent, path.name, entry)
        log.info("saved %s", path)

    what = f"open_clip {clip_model} {clip_pretrained!r}"
    return WeightsFile(what, url, Path(folder) / clip_weights_filename(clip_model, clip_pretrained), download)


def vggish_weights_file(folder: str | os.PathLike) -> WeightsFile:
    """torchvggish's released VGGish state dict in `folder`, byte for byte."""

    def download(path: Path) -> None:
        download_vggish(path)
        entry = {"kind": "vggish", "source": VGGISH_URL, "file_sha256": file_sha256(path)}
        _write_manifest_entry(path.parent, VGGISH_FILENAME, entry)
        log.info("saved %s", path)

    return WeightsFile("VGGish weights", VGGISH_URL, Path(folder) / VGGISH_FILENAME, download)


def fetch_default_weights(
    folder: str | os.PathLike, clip_model: str = "ViT-B-32", clip_pretrained: str = "openai"
) -> dict[str, Path]:
    """Download the default CLIP and VGGish weights into `folder` (needs network); skip files already there.

    Returns {"clip": path, "vggish": path}. The loaders accept the folder as `weights_dir`. A file that
    cannot be downloaded is a WeightsUnavailable naming each such file and how to place it by hand.
    """
    files = {
        "clip": clip_weights_file(folder, clip_model, clip_pretrained),
        "vggish": vggish_weights_file(folder),
    }
    done, failed = fetch(files)
    if failed:
        raise WeightsUnavailable("; ".join(failed.values()))
    return done
