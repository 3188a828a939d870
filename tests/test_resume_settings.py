"""A resume with a setting that changes the bits (docs/reliability.md, "Runs and outputs"): caught before any
work, in one line naming the setting, both values and the two ways out, and the folder stays usable."""

from __future__ import annotations

import open_clip
from click.testing import CliRunner
from safetensors.torch import save_file
from test_extract import TINY_CLIP, TINY_FLAGS

from avaf.extract.cli import main as extract_main
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import complete_shards, shard_dir

from conftest import write_clip


def clips(folder, n):
    for i in range(n):
        write_clip(folder / f"clip{i}.mp4", seconds=1, tones=(300 + 50 * i, 500))
    return folder


def extract(*args):
    return CliRunner().invoke(extract_main, [*args, "--in-process"])


def test_a_changed_batch_size_is_refused_before_any_work_and_the_folder_stays_usable(tmp_path):
    videos, out = clips(tmp_path / "v", 4), tmp_path / "feats.h5"
    first = extract(
        *TINY_FLAGS, "--videos", str(videos), "--out", str(out), "--batch-size", "8", "--limit", "2"
    )
    assert first.exit_code == 0, first.output
    shards = complete_shards(shard_dir(out))
    again = extract(*TINY_FLAGS, "--videos", str(videos), "--out", str(out))  # --batch-size left at 64
    assert again.exit_code == 2
    lines = again.output.strip().splitlines()
    assert lines == [
        f"avaf-extract: {shard_dir(out)}: its shards were made with --batch-size 8, this run asks for 64, and "
        "the features would not be the same bits: pass --batch-size 8 to continue them, or choose a new --out"
    ]
    assert complete_shards(shard_dir(out)) == shards  # nothing written, nothing removed
    fixed = extract(*TINY_FLAGS, "--videos", str(videos), "--out", str(out), "--batch-size", "8")
    assert fixed.exit_code == 0, fixed.output
    assert "written 2, skipped as done 2, failed 0" in fixed.output
    with FeatureStore(out) as fs:
        assert fs.video_ids == [f"clip{i}" for i in range(4)]


def test_other_weights_are_refused_before_any_video_is_decoded(tmp_path):
    videos, out = clips(tmp_path / "v", 2), tmp_path / "feats.h5"
    weights = tmp_path / "tiny.safetensors"
    open_clip.add_model_config(TINY_CLIP)
    save_file(open_clip.create_model("ViT-avaf-tiny").state_dict(), str(weights))
    flags = [
        "--clip-model",
        TINY_CLIP,
        "--vggish-weights",
        "random",
        "--videos",
        str(videos),
        "--out",
        str(out),
    ]
    first = extract(*flags, "--clip-pretrained", str(weights), "--limit", "1")
    assert first.exit_code == 0, first.output
    shards = complete_shards(shard_dir(out))
    again = extract(*flags, "--clip-pretrained", "random")
    assert again.exit_code == 2
    [line] = [x for x in again.output.splitlines() if x.startswith("avaf-extract:")]
    assert line.startswith(
        f"avaf-extract: {shards[0]}: its avaf set was made with other encoders or settings"
    )
    assert "clip.random False vs True" in line and "clip_sha256" in line
    assert line.endswith(
        f"pass the settings it was made with to continue {shard_dir(out)}, or choose a new --out"
    )
    assert complete_shards(shard_dir(out)) == shards
