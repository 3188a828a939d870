"""avaf-fetch-weights where the hosts cannot be reached: one short connection per host, no download (so no
library retries for a minute), one line per weight saying why and how to place the file by hand
(extract/encoders/weights.fetch)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner

from avaf.extract.cli import fetch_weights as fetch_main
from avaf.extract.encoders import tome_encoder, weights
from avaf.extract.encoders.weights import WeightsUnavailable, connection_problem, fetch_default_weights

OFFLINE = "[Errno -2] Name or service not known"
HF = "https://huggingface.co"


@pytest.fixture
def offline(monkeypatch) -> list[str]:
    """No host answers; a download would fail the test. Returns the addresses the connection check got."""
    tried: list[str] = []

    def unreachable(url: str, timeout_s: float = 3.0) -> str:
        tried.append(url)
        return OFFLINE

    def download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(weights, "connection_problem", unreachable)
    for module, name in ((weights, "download_clip_state_dict"), (weights, "download_vggish")):
        monkeypatch.setattr(module, name, download)
    monkeypatch.setattr(tome_encoder.timm, "create_model", download)
    return tried


def _line(folder, name: str, what: str, url: str, file: str) -> str:
    host = urlsplit(url).hostname
    return (
        f"avaf-fetch-weights: {name}: {what}: not downloaded: {host} cannot be reached ({OFFLINE}). By hand: "
        f"download {url} where it can be reached and save it as {folder / file}; avaf-extract --weights-dir "
        f"{folder} then reads it"
    )


def test_one_line_per_weight_and_no_download_when_the_hosts_cannot_be_reached(offline, tmp_path):
    folder = tmp_path / "weights"
    res = CliRunner().invoke(fetch_main, [str(folder), "--features", "avaf,tspm"])
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [
        _line(folder, "clip", "open_clip ViT-B-32 'openai'",
              f"{HF}/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors",
              "open_clip-ViT-B-32-openai.safetensors"),
        _line(folder, "vggish", "VGGish weights", weights.VGGISH_URL, "vggish-10086976.pth"),
        _line(folder, "tspm_clip", "open_clip ViT-L-14-336 'openai'",
              f"{HF}/timm/vit_large_patch14_clip_336.openai/resolve/main/open_clip_model.safetensors",
              "open_clip-ViT-L-14-336-openai.safetensors"),
        _line(folder, "tome", "timm vit_large_patch16_384.augreg_in21k_ft_in1k",
              f"{HF}/timm/vit_large_patch16_384.augreg_in21k_ft_in1k/resolve/main/model.safetensors",
              "timm-vit_large_patch16_384.augreg_in21k_ft_in1k.safetensors"),
    ]  # fmt: skip
    assert "run `avaf-fetch-weights" not in res.output and "avaf-fetch-weights DIR" not in res.output
    assert sorted(urlsplit(u).hostname for u in offline) == ["github.com", "huggingface.co"]  # once each
    assert not folder.exists()  # nothing downloaded, nothing made


def test_files_already_there_are_kept_and_only_the_others_fail(offline, tmp_path):
    (tmp_path / "vggish-10086976.pth").write_bytes(b"fetched before")
    res = CliRunner().invoke(fetch_main, [str(tmp_path)])
    assert res.exit_code == 2 and res.stdout == f"vggish: {tmp_path / 'vggish-10086976.pth'}\n"
    assert [line.split(": ")[1] for line in res.stderr.splitlines()] == ["clip"]
    assert (tmp_path / "vggish-10086976.pth").read_bytes() == b"fetched before"


def test_the_python_call_names_every_missing_file(offline, tmp_path):
    with pytest.raises(WeightsUnavailable) as e:
        fetch_default_weights(tmp_path)
    assert str(e.value).count("not downloaded: ") == 2 and "avaf-fetch-weights" not in str(e.value)


def test_the_connection_check_is_one_attempt_through_the_proxy_when_there_is_one(monkeypatch):
    """With HTTPS_PROXY set, the proxy is what must answer (here a closed local port: refused at once)."""
    for name in ("no_proxy", "NO_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    assert "refused" in connection_problem(f"{HF}/timm/x/resolve/main/model.safetensors", timeout_s=2)
