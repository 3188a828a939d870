"""avaf-train on a GPU: no step waits for the queue, and the resident path trains as the CPU one does.

Marked gpu (run with `pytest -m gpu tests/test_train_gpu.py`; tests/benchmarks/bench_gpu.sh runs it on the
lent machine). A wait is counted with torch's sync debug mode, which warns at every call that synchronises
the device: an epoch of 2 steps and one of 8 must wait the same number of times (the end of the epoch, the
visiting order), and so must an evaluation of 2 batches and one of 8.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from test_train import tiny_cfg

from avaf.train.evaluate import predict
from avaf.train.loop import Run, amp_dtype, load_data, train_epoch
from avaf.train.model import build_model

from conftest import known_answer_store

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu")
    feats = known_answer_store(folder / "feats.h5", n_videos=200)
    cfg = tiny_cfg(feats, folder / "run", **{"run.device": "cuda"})  # test_train's tiny model
    device = torch.device("cuda")
    splits, shape = load_data(cfg, device)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr, fused=True)
    return cfg, splits, shape, model, opt, Run(cfg, folder / "run", shape, amp_dtype(device, True))


def _waits(fn) -> int:
    """How many times `fn` synchronised the device."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def test_an_epoch_waits_for_the_gpu_as_often_whatever_its_steps(setup):
    _, splits, _, model, opt, run = setup
    few = _waits(lambda: train_epoch(model, opt, splits["train"], run, 0, max_steps=2))
    many = _waits(lambda: train_epoch(model, opt, splits["train"], run, 1, max_steps=8))
    assert many == few, f"{few} waits in 2 steps, {many} in 8: a step waits for the GPU"


def test_evaluation_waits_for_the_gpu_as_often_whatever_its_batches(setup):
    _, splits, shape, model, _, run = setup
    questions = len(splits["val"])
    few = _waits(lambda: predict(model, splits["val"], shape, -(-questions // 2), run.amp))
    many = _waits(lambda: predict(model, splits["val"], shape, -(-questions // 8), run.amp))
    assert many == few, f"{few} waits in 2 batches, {many} in 8: a batch waits for the GPU"


def test_the_resident_split_lives_on_the_gpu_and_predicts_as_on_the_cpu(setup):
    cfg, splits, shape, model, _, _ = setup
    assert splits["val"].features.visual.device.type == "cuda"  # the split fits: resident in fp16
    assert splits["val"].features.visual.dtype == torch.float16
    gpu, _ = predict(model, splits["val"], shape, 16)  # full precision: the CPU's maths
    cpu_splits, _ = load_data(cfg, torch.device("cpu"))
    cpu, _ = predict(model.cpu(), cpu_splits["val"], shape, 16)
    model.cuda()
    assert (gpu == cpu).float().mean() > 0.98  # argmax ties may break differently in the last bit
