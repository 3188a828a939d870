"""The table of decode backends (avaf.extract.decode.backends, DESIGN.md §3 "Decoding"): what each name
tries, in what order, in this process and in the isolated decode child alike; a new backend is one entry.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging

import numpy as np
import pytest

from avaf.extract.config import DecodeConfig
from avaf.extract.decode import backends as dec
from avaf.extract.decode.backends import DecodeError, decode_video
from avaf.extract.decode.worker import IsolatedDecoder

from conftest import write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_clip(tmp_path_factory.mktemp("clips") / "three.mp4", 3)


def test_each_name_tries_what_its_table_entry_says():
    assert dec.attempts("auto") == ("pyav", "decord")  # never a GPU decoder
    assert dec.attempts("pyav") == ("pyav",) and dec.attempts("decord") == ("decord",)
    for name in ("pyav-cuda", "torchcodec", "torchcodec-cuda"):
        assert dec.attempts(name) == (name, "pyav")
    assert sorted(dec.GPU_BACKENDS) == ["pyav-cuda", "torchcodec-cuda"]
    with pytest.raises(
        ValueError, match="unknown backend 'opencv': expected one of 'auto', 'pyav', 'decord'"
    ):
        dec.attempts("opencv")


def test_every_decode_function_takes_path_size_and_threads():
    for backend in dec.BACKENDS.values():  # how _run calls it; a mismatch would fail only where it can run
        bound = inspect.signature(backend.decode).bind("clip.mp4", 224, 1)
        assert bound.arguments.get("threads") == 1, backend.name


def test_the_decoder_flag_offers_the_table():
    field = {f.name: f for f in dataclasses.fields(DecodeConfig)}["backend"]
    assert sorted(field.metadata["choices"]) == sorted(["auto", *dec.BACKENDS])


def _no_frames(path, image_size: int, threads: int):
    raise DecodeError(path, "fake reads no frames")


def _add_fake_backend() -> None:
    """A new backend is one table entry: here added at run time (in a decode child, as its initializer)."""
    dec.BACKENDS["fake"] = dec.Backend("fake", _no_frames, fallback="pyav", auto=True)


def test_a_backend_added_to_the_table_is_tried_here_and_in_the_decode_child(clip, monkeypatch, caplog):
    monkeypatch.setattr(dec, "BACKENDS", dict(dec.BACKENDS))
    _add_fake_backend()
    assert dec.attempts("fake") == ("fake", "pyav") and dec.attempts("auto") == ("pyav", "decord", "fake")
    reference = decode_video(clip, "pyav")
    with IsolatedDecoder(initializer=_add_fake_backend) as isolated:
        there = isolated.decode(clip, timeout_s=60, backend="fake")
    for video in (decode_video(clip, "fake"), there):
        assert video.decoder == "pyav" and video.streams["failed_attempts"] == ["fake: fake reads no frames"]
        np.testing.assert_array_equal(video.frames, reference.frames)
        np.testing.assert_array_equal(video.audio, reference.audio)
        np.testing.assert_array_equal(video.timestamps, [0.48, 1.48, 2.48])
    missing = dataclasses.replace(dec.BACKENDS["fake"], problem=lambda: "fake is not installed")
    monkeypatch.setitem(dec.BACKENDS, "fake", missing)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        dec.check_backend("fake")  # no error: another backend takes over, and one line says so
    assert caplog.messages == ["--decoder fake: fake is not installed; decoding with PyAV instead"]
    assert decode_video(clip, "fake").streams["failed_attempts"] == ["fake: fake is not installed"]


def test_a_backend_that_cannot_decode_here_with_nothing_to_fall_back_on_is_refused(monkeypatch):
    alone = dec.Backend("alone", _no_frames, problem=lambda: "alone is not installed: pip install alone")
    monkeypatch.setitem(dec.BACKENDS, "alone", alone)
    with pytest.raises(ValueError) as caught:
        dec.check_backend("alone")
    auto = "PyAV and decord" if dec.backend_problem("decord") is None else "PyAV"
    assert (
        str(caught.value)
        == f"--decoder alone: alone is not installed: pip install alone; or use --decoder auto ({auto})"
    )
