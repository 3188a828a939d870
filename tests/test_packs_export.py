"""avaf-export --format qa-tiger | tspm | av-master | stg: padding, MANIFEST.json, bad input, the command.

Stores come from pack_stores.py (the real writer, the tspm set at its real row shapes, tiny T).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from pack_stores import ENCODERS, PAD, VIDEOS, check_manifest, padded, tspm_store

from avaf.shared.exchange import EXPORTERS, ExportOptions, export_pack
from avaf.shared.exchange.cli import export_main
from avaf.shared.exchange.layouts import LAYOUTS
from avaf.shared.exchange.packs_export import fit_seconds
from avaf.shared.store.merge import build_store
from avaf.shared.store.schema import AVAF
from avaf.shared.store.sets import TSPM, avaf_set, tspm_array
from avaf.shared.store.writer import ShardWriter, complete_shards, new_shard_path, shard_dir

from conftest import fake_question, fake_video, write_store


@pytest.fixture
def store(tmp_path) -> Path:
    return tspm_store(tmp_path / "feats.h5")


def test_pad_to_repeats_the_last_second_cuts_longer_videos_and_says_so(store, tmp_path):
    out = tmp_path / "out"
    report = export_pack("tspm", store, out, ExportOptions(pad_to=PAD))
    assert report.padded == {"00000093": 2, "va00000005": 3} and report.cut == {"esa00000001": 5}
    assert (
        "--pad-to 4: padded 2 shorter videos by repeating their last second; cut 1 longer ones"
        in "\n".join(report.lines())
    )
    audio = np.load(out / "vggish" / "00000093.npy")
    assert np.array_equal(audio[1], audio[2]) and np.array_equal(
        audio[1], audio[3]
    )  # seconds 2, 3 = second 1
    for t in (1, 2, 4, 5):
        assert np.array_equal(fit_seconds(np.arange(t)[:, None], PAD), padded(np.arange(t)[:, None]))
    manifest = check_manifest(out)
    padding = manifest["padding"]
    assert padding["pad_to"] == PAD and padding["padded"] == report.padded and padding["cut"] == report.cut
    tome = manifest["arrays"]["ToMe_feat/tome14"]
    assert (
        tome["written"] == {"dtype": "float32", "shape": [PAD, 14, 1024]} and tome["padding"]["pad_to"] == PAD
    )
    assert tome["encoder"] == {**vars(ENCODERS["tome"]), "random": False}
    assert tome["preprocessing"] == {"made": "by the test"} and tome["source"].startswith(
        "/seconds/tspm/tome"
    )
    assert manifest["arrays"]["clip_feats/qst_ViT-L14@336px"]["padding"] is None
    assert manifest["arrays"]["clip_feats/qst_ViT-L14@336px"]["written"]["shape"] == [1, 768]


def test_without_pad_to_videos_keep_their_seconds_and_uneven_lengths_are_said(store, tmp_path):
    report = export_pack("qa-tiger", store, tmp_path / "out", ExportOptions())
    for vid, t in VIDEOS.items():
        assert np.load(tmp_path / "out/feats/vggish" / f"{vid}.npy").shape == (t, 128)
    assert "videos have 2 to 5 seconds: the loader stacks a batch, so all need one T: pass --pad-to N" in (
        "\n".join(report.lines())
    )
    manifest = check_manifest(tmp_path / "out")
    assert (
        manifest["padding"]["pad_to"] is None
        and manifest["arrays"]["feats/vggish"]["written"]["shape"][0] == "T"
    )


def test_random_weights_are_said_first_in_the_summary_and_the_manifest(tmp_path):
    feats = tspm_store(tmp_path / "feats.h5", random=True)
    report = export_pack("av-master", feats, tmp_path / "out", ExportOptions(pad_to=PAD))
    assert report.lines()[0].startswith("WARNING: features from randomly initialised encoders (")
    manifest = check_manifest(tmp_path / "out")
    assert next(iter(manifest)) == "WARNING" and manifest["random_weights"] is True
    assert {"tome", "vggish", "ViT-L-14-336"} <= set(manifest["random_encoders"])
    assert manifest["arrays"]["clip_vit_l14_336px"]["encoder"]["random"] is True


@pytest.mark.parametrize(
    "fmt, lacking", [("tspm", "tspm/frame, tspm/tome, tspm/sentence"), ("qa-tiger", "tspm/frame, tspm/tome")]
)
def test_a_store_without_what_a_format_needs_is_one_line_exit_2(tmp_path, fmt, lacking):
    """An avaf-only store (VGGish would serve as the audio): the line names every missing array, nothing is
    written."""
    rng = np.random.default_rng(0)
    feats = write_store(
        tmp_path / "avaf.h5", [fake_video(rng, "00000001", 2)], [fake_question(rng, 1, "00000001", "test")]
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(export_main, ["--feats", str(feats), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith(f"avaf-export: {feats}: avaf-export --format {fmt} needs {lacking}, ")
    assert "which this store lacks; its feature sets: avaf (" in result.output and not out.exists()


def test_a_store_without_prompts_exports_the_rest_and_says_what_is_absent(tmp_path):
    feats = tspm_store(tmp_path / "feats.h5", arrays=("audio", "frame", "tome", "sentence", "words"))
    report = export_pack("tspm", feats, tmp_path / "out", ExportOptions(pad_to=PAD))
    assert not (tmp_path / "out/clip_feats/qaPrompt_ViT-L14@336px").exists()
    assert any(
        line.startswith("no clip_feats/qaPrompt_ViT-L14@336px/ files: this store has no tspm/prompt")
        and "--qa-prompts FILE" in line
        for line in report.lines()
    )
    manifest = check_manifest(tmp_path / "out")
    assert "no tspm/prompt" in manifest["not_written"]["clip_feats/qaPrompt_ViT-L14@336px"]
    assert len(manifest["files"]) == 3 * 3 + 3


def test_vggish_of_the_avaf_set_serves_when_the_tspm_set_has_none(tmp_path):
    """One VGGish whichever set recorded it: a store with the avaf set and a tspm set without audio."""
    rng = np.random.default_rng(3)
    path = tmp_path / "both.h5"
    sets = {AVAF: avaf_set({}), TSPM: {n: tspm_array(n) for n in ("frame", "tome", "sentence", "words")}}
    with ShardWriter(new_shard_path(shard_dir(path)), {"t": 1}, None, [], sets) as w:
        v = fake_video(rng, "00000001", 2, n_tokens=50, width=512)
        v.sets = {TSPM: {"frame": np.ones((2, 768), np.float16), "tome": np.ones((2, 14, 1024), np.float16)}}
        w.add_video(v)
        q = fake_question(rng, 5, "00000001", "test", 512)
        q.sets = {TSPM: {"sentence": np.ones(768, np.float16), "words": np.ones((77, 768), np.float16)}}
        w.add_question(q)
    build_store(complete_shards(shard_dir(path)), path)
    export_pack("av-master", path, tmp_path / "out", ExportOptions())
    assert np.array_equal(np.load(tmp_path / "out/vggish_audio/00000001.npy"), v.audio.astype(np.float32))
    assert check_manifest(tmp_path / "out")["arrays"]["vggish_audio"]["source"].startswith("/seconds/audio ")


def test_a_tiny_stand_in_is_exported_and_its_shapes_are_said(tmp_path):
    feats = tspm_store(tmp_path / "feats.h5", shapes={"tome": (2, 16), "words": (77, 8), "sentence": (8,)})
    report = export_pack("stg", feats, tmp_path / "out", ExportOptions(pad_to=PAD))
    differs = [line for line in report.lines() if "not (14, 1024) as the real encoder gives them" in line]
    assert len(differs) == 1 and "/seconds/tspm/tome rows are (2, 16)" in differs[0]
    with h5py.File(tmp_path / "out" / "clip_word_vit_L14.h5", "r") as f:
        assert f["12"]["qst_feat"].shape == (1, 20, 8)


def test_an_earlier_export_is_refused_and_overwrite_replaces_only_its_own_files(store, tmp_path):
    out = tmp_path / "out"
    export_pack("tspm", store, out, ExportOptions(pad_to=PAD))
    mine = out / "clip_feats" / "frame_1fps_ViT-B32"  # the user's own features beside the export
    mine.mkdir()
    (mine / "x.npy").write_bytes(b"keep")
    args = ["--feats", str(store), "--format", "tspm", "--out", str(out), "--pad-to", "3"]
    refused = CliRunner().invoke(export_main, args)
    assert (
        refused.exit_code == 2 and "already holds a tspm export (MANIFEST.json, vggish/); " in refused.output
    )
    result = CliRunner().invoke(export_main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (
        np.load(out / "vggish" / "00000093.npy").shape == (3, 128)
        and (mine / "x.npy").read_bytes() == b"keep"
    )
    assert check_manifest(out, others={"clip_feats/frame_1fps_ViT-B32/x.npy"})["padding"]["pad_to"] == 3


@pytest.mark.parametrize(
    "fmt, flags, message",
    [
        ("tspm", ["--dtype", "float16"], "--dtype, --layout and --context-length apply to --format npy"),
        ("stg", ["--layout", "exact"], "the stg layout is float16, as its loader reads it"),
        ("npy", ["--pad-to", "60"], "--pad-to applies to the qa-tiger, tspm, av-master and stg layouts"),
        ("tspm", ["--pad-to", "0"], "Invalid value for '--pad-to'"),
    ],
)
def test_options_of_another_format_are_refused(store, tmp_path, fmt, flags, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        export_main, ["--feats", str(store), "--format", fmt, "--out", str(out), *flags]
    )
    assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1
    assert not out.exists()


def test_cli_prints_the_library_report_and_writes_the_same_files(store, tmp_path):
    library = export_pack("stg", store, tmp_path / "lib", ExportOptions(pad_to=PAD))
    args = ["--feats", str(store), "--format", "stg", "--out", str(tmp_path / "cli"), "--pad-to", "4"]
    result = CliRunner().invoke(export_main, args)
    assert result.exit_code == 0
    assert (
        result.output
        == "\n".join(library.lines()).replace(str(tmp_path / "lib"), str(tmp_path / "cli")) + "\n"
    )
    assert check_manifest(tmp_path / "cli")["files"] == check_manifest(tmp_path / "lib")["files"]
    assert EXPORTERS["stg"].args == ("stg",) and set(EXPORTERS) == {"npy", *LAYOUTS}
