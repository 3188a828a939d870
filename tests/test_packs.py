"""Feature packs (extract/packs.py): `avaf-extract --features avaf,tspm` on the real test videos, decoded once.

Tiny stand-ins on random weights, asked for through the config as a user's config file would (TspmConfig's
clip_model: a ViT-L/14@336 model-config JSON at a tiny width; tome_model_kwargs: timm's ViT-L/16@384 at width
32), so the encoders under test are the real classes with their real preprocessing: real decoders, real
HDF5, real Ray. Checked: shapes and the recorded encoders; the avaf set equals a `--features avaf` run's;
tspm arrays equal the encoders called directly on each video's decoded frames (decode-once parity); a pack
added to an existing store leaves the stored bytes as they were.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from avaf.extract import questions as question_stage
from avaf.extract.cli import fetch_weights
from avaf.extract.cli import main as extract_main
from avaf.extract.config import ExtractConfig, InputConfig, RuntimeConfig, TspmConfig
from avaf.extract.decode.backends import decode_video
from avaf.extract.decode.views import View
from avaf.extract.encoders.stage import load_encoders
from avaf.extract.pipeline import run_extract
from avaf.extract.prompts import load_prompt_table
from avaf.extract.todo import QuestionJob
from avaf.shared.avqa.annotations import load_questions
from avaf.shared.store.reader import FeatureStore
from avaf.shared.store.writer import complete_shards, shard_dir

from conftest import DATA

VIDEOS = {"nasa_13013": 13, "av1_video": 5, "h265_video": 1, "h264_10bits": 1}
TINY_CLIP = str(DATA / "ViT-avaf-tiny.json")
TINY_TSPM = TspmConfig(
    clip_model=str(DATA / "ViT-L-14-336-avaf-tiny.json"),  # 336 px, patch 14: 577 tokens, width 32
    tome_model_kwargs={"embed_dim": 32, "num_heads": 2, "mlp_ratio": 1.0},  # 384 px, 24 blocks: 577 -> 14
    clip_batch_size=8,
    tome_batch_size=8,
)
T_COUNT = "How many sounding <Object> in the video?"
T_WHERE = "Where is the <Object>?"
T_LOUDER = "Is the <Object> on the <LR> louder than the <Object> on the <LR>?"  # not in the prompt table


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The real test videos; five questions (one of a template the prompt table lacks); the table (.csv)."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "videos").mkdir()
    for name in ("nasa_13013.mp4", "av1_video.mkv", "h265_video.mp4", "h264_10bits.mp4"):
        shutil.copy(DATA / "videos" / name, d / "videos" / name)
    rows = [
        (1, "nasa_13013", T_COUNT, ["violin"]), (2, "nasa_13013", T_WHERE, ["cello"]),
        (3, "av1_video", T_COUNT, ["piano"]), (4, "av1_video", T_LOUDER, ["flute", "left", "erhu", "right"]),
        (5, "h265_video", T_WHERE, ["guzheng"]),
    ]  # fmt: skip
    ann = [
        {"video_id": v, "question_id": i, "type": '["Audio", "Counting"]', "anser": "two",
         "question_content": t, "templ_values": json.dumps(vals)}
        for i, v, t, vals in rows
    ]  # fmt: skip
    (d / "avqa-val.json").write_text(json.dumps(ann))
    with open(d / "prompts.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [
                ("No.", "Modalities", "Type", "Question Template", "Declarative Sentence Text Prompt"),
                (1, "Audio", "Counting", T_COUNT, "Several <Object> sound in the video."),
                (2, "Visual", "Location", T_WHERE, "The <Object> is somewhere."),
            ]
        )
    return {"videos": d / "videos", "annotations": d / "avqa-val.json", "prompts": d / "prompts.csv"}


def tiny(inputs: dict, out: Path, features: str, prompts: bool = True, **runtime) -> ExtractConfig:
    return ExtractConfig(
        out=str(out),
        features=features,
        input=InputConfig(
            videos=str(inputs["videos"]),
            annotations=(str(inputs["annotations"]),),
            qa_prompts=str(inputs["prompts"]) if prompts and "tspm" in features else None,
        ),
        tspm=TINY_TSPM,
        runtime=RuntimeConfig(**{"random_weights": True, "batch_size": 8, "num_cpus": 0.5, **runtime}),
        clip=replace(ExtractConfig().clip, model=TINY_CLIP),
    )


@pytest.fixture(scope="module")
def avaf_only(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("avaf") / "feats.h5"
    summary = run_extract(tiny(inputs, out, "avaf", in_process=True), progress=False)
    assert summary.written == 4 and not summary.failed
    return out


@pytest.fixture(scope="module")
def both(inputs, tmp_path_factory):
    """`--features avaf,tspm` on a local Ray instance."""
    out = tmp_path_factory.mktemp("both") / "feats.h5"
    summary = run_extract(tiny(inputs, out, "avaf,tspm", in_process=False), progress=False)
    return summary, out


def test_both_packs_on_ray_shapes_encoders_and_counts(both):
    summary, out = both
    assert summary.mode.startswith("on a local Ray instance") and summary.written == 4 and not summary.failed
    assert summary.questions == 5 and summary.prompts_missing == 1  # the louder template is not in the table
    assert set(summary.timings) == {"decode", "clip", "vggish", "tspm_clip", "tome"}
    with FeatureStore(out) as fs:
        assert fs.random_weights == ["clip", "tome", "tspm_clip", "vggish"]
        tspm = fs.sets["tspm"]
        assert sorted(tspm) == ["audio", "frame", "prompt", "sentence", "tome", "words"]
        shapes = {n: a.shape for n, a in tspm.items()}
        assert shapes == {"audio": (128,), "frame": (16,), "tome": (14, 32), "sentence": (16,),
                          "words": (77, 16), "prompt": (16,)}  # fmt: skip
        for vid, t in VIDEOS.items():
            assert fs.video_array(vid, "tspm", "tome").shape == (t, 14, 32)
            assert fs.video_array(vid, "tspm", "frame").shape == (t, 16)
            np.testing.assert_array_equal(fs.video_array(vid, "tspm", "audio"), fs.video(vid)["audio"])
        tome, frame = tspm["tome"], tspm["frame"]
        assert (tome.encoder.model, tome.encoder.library, tome.encoder.random) == (
            "vit_large_patch16_384", "timm", True,
        )  # fmt: skip
        assert tome.preprocessing["precision"].startswith("fp32 always")
        assert tome.preprocessing["view"] == "shorter side to 438 (PIL bicubic), centre crop 384 x 384"
        assert frame.encoder.model == "ViT-L-14-336-avaf-tiny" and frame.preprocessing["quick_gelu"]
        assert (
            fs.signature["tspm"]["tome"]["r"] == [25] * 23
            and fs.signature["tspm"]["qa_prompts"]["templates"] == 2
        )
        prompt = fs.question_array("tspm", "prompt")
        louder = fs.questions()["question_id"] == 4
        assert np.isnan(prompt[louder]).all() and not np.isnan(prompt[~louder]).any()


def test_the_avaf_set_equals_an_avaf_only_run(both, avaf_only):
    _, out = both
    with FeatureStore(out) as a, FeatureStore(avaf_only) as b:
        assert {k: v for k, v in a.signature.items() if k != "tspm"} == b.signature
        for vid in VIDEOS:
            va, vb = a.video(vid), b.video(vid)
            for name in ("visual_tokens", "visual_pooled", "audio", "audio_valid", "timestamp"):
                assert va[name].tobytes() == vb[name].tobytes(), (vid, name)
        qa, qb = a.questions(), b.questions()
        assert qa["sentence"].tobytes() == qb["sentence"].tobytes()
        for qid in qa["question_id"]:
            assert a.question_words(qid).tobytes() == b.question_words(qid).tobytes()


def test_tspm_arrays_equal_the_encoders_on_the_decoded_frames(both, inputs):
    """Decode once: the stored tspm arrays are what each encoder gives from the decoded frame itself, with
    its own preprocessing (ToMe's 438 -> 384, CLIP's 336), not from another encoder's resized copy."""
    _, out = both
    cfg = tiny(inputs, out, "avaf,tspm")
    enc = load_encoders(cfg)
    with FeatureStore(out) as fs:
        for vid in VIDEOS:
            path = fs.video(vid, fields=())["source_path"]
            raw = decode_video(path, "auto", (View(0),)).frames  # (T, H, W, 3): the frames as decoded
            tome = enc.models["tome"].encode_frames(raw).numpy().astype(np.float16)
            frame = enc.models["tspm_clip"].encode_pooled(list(raw)).numpy().astype(np.float16)
            assert fs.video_array(vid, "tspm", "tome").tobytes() == tome.tobytes(), vid
            assert fs.video_array(vid, "tspm", "frame").tobytes() == frame.tobytes(), vid
        table = load_prompt_table(inputs["prompts"])
        jobs = [QuestionJob(q, ("avaf", "tspm")) for q in load_questions((str(inputs["annotations"]),))]
        rows = [
            r["tspm"]
            for s in question_stage.batches(jobs, 8, table)
            for r in question_stage.encode_batch(enc, s)
        ]
        for name in ("sentence", "words"):
            assert fs.question_array("tspm", name).tobytes() == np.stack([r[name] for r in rows]).tobytes()
    clip = enc.models["tspm_clip"]
    words, sentence = clip.encode_text_padded(["How many sounding violin in the video?"])  # TSPM's '?'
    np.testing.assert_array_equal(rows[0]["sentence"], sentence[0].numpy().astype(np.float16))


def test_adding_a_pack_keeps_the_stored_bytes(avaf_only, inputs, tmp_path):
    """A store of the avaf set gains tspm for every video and question: decoded again once, the avaf arrays
    copied, not recomputed; the outgrown shards go; a second run has nothing to do."""
    out = tmp_path / "feats.h5"
    shutil.copytree(shard_dir(avaf_only), shard_dir(out))
    shutil.copy(avaf_only, out)
    old = {p.name for p in complete_shards(shard_dir(out))}
    summary = run_extract(tiny(inputs, out, "avaf,tspm", in_process=True), progress=False)
    assert (summary.written, summary.extended, summary.skipped, summary.questions) == (0, 4, 0, 5)
    assert not old & {p.name for p in complete_shards(shard_dir(out))}
    with FeatureStore(out) as a, FeatureStore(avaf_only) as b:
        assert sorted(a.sets) == ["avaf", "tspm"] and sorted(a.video_ids) == sorted(b.video_ids)
        for vid in VIDEOS:
            for name in ("visual_tokens", "visual_pooled", "audio", "timestamp"):
                assert a.video(vid)[name].tobytes() == b.video(vid)[name].tobytes()
            assert a.video_array(vid, "tspm", "tome").shape == (VIDEOS[vid], 14, 32)
        order = lambda fs: np.argsort(fs.questions()["question_id"])  # noqa: E731
        assert a.questions()["sentence"][order(a)].tobytes() == b.questions()["sentence"][order(b)].tobytes()
    again = run_extract(tiny(inputs, out, "avaf,tspm", in_process=True), progress=False)
    assert (again.written, again.extended, again.skipped, again.questions) == (0, 0, 4, 0)
    with pytest.raises(ValueError, match="holds the feature set tspm, which --features avaf leaves out"):
        run_extract(tiny(inputs, out, "avaf", in_process=True), progress=False)


def test_a_pack_is_not_added_to_sets_made_with_other_settings(avaf_only, inputs, tmp_path):
    out = tmp_path / "feats.h5"
    shutil.copytree(shard_dir(avaf_only), shard_dir(out))
    before = {p.name: p.read_bytes() for p in complete_shards(shard_dir(out))}
    cfg = tiny(inputs, out, "avaf,tspm", in_process=True, batch_size=4)  # another pass size: other bits
    with pytest.raises(ValueError, match=r"made with --batch-size 8, this run asks for 4"):  # before encoders
        run_extract(cfg, progress=False)
    assert {p.name: p.read_bytes() for p in complete_shards(shard_dir(out))} == before


def test_unknown_pack_and_prompts_without_tspm_are_one_line_before_any_work(inputs, tmp_path):
    args = ["--videos", str(inputs["videos"]), "--out", str(tmp_path / "f.h5")]
    res = CliRunner().invoke(extract_main, [*args, "--features", "avaf,tpsm"])
    assert res.exit_code == 2 and "unknown feature pack 'tpsm'; known packs: avaf, tspm" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = CliRunner().invoke(
        extract_main, [*args, "--qa-prompts", str(inputs["prompts"]), "--random-weights"]
    )
    assert res.exit_code == 2 and "QA prompts belong to the tspm pack" in res.output
    assert not (tmp_path / "f.h5").exists() and not complete_shards(shard_dir(tmp_path / "f.h5"))


def test_fetch_weights_list_names_the_file_each_encoder_reads():
    res = CliRunner().invoke(fetch_weights, ["--list"])
    assert res.exit_code == 0, res.output
    lines = [line.split("\t") for line in res.output.strip().splitlines()]
    assert lines == [
        ["avaf", "clip", "open_clip-ViT-B-32-openai.safetensors"],
        ["avaf", "vggish", "vggish-10086976.pth"],
        ["tspm", "vggish", "vggish-10086976.pth"],
        ["tspm", "tspm_clip", "open_clip-ViT-L-14-336-openai.safetensors"],
        ["tspm", "tome", "timm-vit_large_patch16_384.augreg_in21k_ft_in1k.safetensors"],
    ]


@pytest.mark.parametrize("width, height", [(320, 180), (480, 270), (640, 360), (1280, 720), (360, 640),
                                           (2000, 300), (300, 2000), (384, 384), (200, 200), (128, 96)])  # fmt: skip
def test_views_are_each_encoders_own_preprocessing_bit_for_bit(width, height):
    """The decode side's views equal what each encoder does to the decoded frame itself: TSPM's PIL resize
    to 438 and crop 384 (tome_encoder.resize_crop), CLIP's resize and crop (clip_resize)."""
    from avaf.extract.decode.sampling import clip_resize
    from avaf.extract.decode.views import make_views
    from avaf.extract.encoders.tome_encoder import resize_crop

    rgb = np.random.default_rng(width + height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    tome, clip336, same = make_views(rgb, (View(384, 438), View(336), View(0)))
    assert tome.tobytes() == resize_crop(rgb, 384, 438).tobytes()
    assert clip336.tobytes() == clip_resize(rgb, 336).tobytes()
    assert same is rgb


def test_an_avaf_run_signs_as_before_packs_and_each_set_reads_its_part(avaf_only, both):
    """A store made before packs (its signature: the avaf keys alone) takes new shards of an avaf run."""
    from avaf.extract.packs import signature_of_set

    legacy = {"clip", "clip_sha256", "vggish", "vggish_sha256", "fps", "sample_rate", "image_size", "dtype",
              "pass_size"}  # fmt: skip
    with FeatureStore(avaf_only) as a, FeatureStore(both[1]) as b:
        assert set(a.signature) == legacy and set(b.signature) == legacy | {"tspm"}
        assert signature_of_set(b.signature, "avaf") == a.signature
        tspm = signature_of_set(b.signature, "tspm")
        assert tspm["vggish"] == a.signature["vggish"] and tspm["dtype"] == "float16"
        assert set(tspm["pass_size"]) == {"vggish_examples", "clip_frames", "tome_frames"}


def test_the_command_line_takes_the_pack_flags_and_a_config_file_the_stand_ins(tmp_path):
    from conftest import write_clip

    conf = tmp_path / "tiny.json"
    tspm = {"clip_model": TINY_TSPM.clip_model, "tome_model_kwargs": TINY_TSPM.tome_model_kwargs}
    conf.write_text(json.dumps({"clip": {"model": TINY_CLIP}, "tspm": tspm}))
    write_clip(tmp_path / "videos" / "tones.mp4", seconds=2)
    out = tmp_path / "feats.h5"
    args = ["--config", str(conf), "--videos", str(tmp_path / "videos"), "--out", str(out), "--in-process"]
    flags = [
        "--features",
        "tspm,avaf",
        "--random-weights",
        "--tome-batch-size",
        "2",
        "--tspm-clip-batch-size",
        "3",
    ]
    res = CliRunner().invoke(extract_main, [*args, *flags])
    assert res.exit_code == 0, res.output
    assert "RANDOM WEIGHTS (clip, tome, tspm_clip, vggish)" in res.output and "written 1," in res.output
    with FeatureStore(out) as fs:
        assert sorted(fs.sets) == ["avaf", "tspm"] and fs.config["features"] == "tspm,avaf"
        assert fs.signature["tspm"]["pass_size"] == {
            "vggish_examples": 64,
            "clip_frames": 3,
            "tome_frames": 2,
        }
        assert fs.video_array("tones", "tspm", "tome").shape == (2, 14, 32)


@pytest.mark.parametrize("name", ["npy", "tspm", "qa-tiger", "av-master", "stg"])
def test_the_extracted_store_exports_in_every_format(both, tmp_path, name):
    """The store `--features avaf,tspm` wrote on Ray, through each `--format`: every video (padded to 5 s) and,
    where the layout has question files, every question; the manifest's checksums are the files'."""
    import hashlib

    import h5py

    from avaf.shared.exchange import EXPORTERS, ExportOptions
    from avaf.shared.exchange.layouts import LAYOUTS

    _, feats = both
    out = tmp_path / name
    report = EXPORTERS[name](feats, out, ExportOptions(pad_to=None if name == "npy" else 5))
    assert report.lines()
    if name == "npy":
        assert sorted(p.stem for p in (out / "vggish").glob("*.npy")) == sorted(VIDEOS)
        return
    manifest = json.loads((out / "MANIFEST.json").read_text())
    files = manifest["files"]
    assert files and all(hashlib.sha256((out / f).read_bytes()).hexdigest() == h for f, h in files.items())
    with FeatureStore(feats) as fs:
        qids = [str(q) for q in fs.questions()["question_id"]]
    for target in LAYOUTS[name].targets:
        expected = sorted(VIDEOS) if target.per == "video" else qids
        if target.array == "prompt":
            expected = [q for q in qids if q != "4"]  # the louder template is not in the prompt table
        if LAYOUTS[name].container == "hdf5":
            with h5py.File(out / target.path, "r") as f:
                assert sorted(f) == sorted(expected)
                first = f[expected[0]]
                rows = (first["qst_feat"] if isinstance(first, h5py.Group) else first)[()]
        else:
            assert sorted(p.stem for p in (out / target.path).glob("*.npy")) == sorted(expected)
            rows = np.load(out / target.path / f"{expected[0]}.npy")
        assert rows.dtype == np.dtype(LAYOUTS[name].dtype)
        if target.per == "video":
            assert rows.shape[0] == 5  # padded: every loader reads one T
        elif target.lead:
            assert rows.shape[0] == 1  # the (1, ...) of the loader's files
