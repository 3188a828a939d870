"""A run's pictures (train/plots.py) measured, not only drawn: delta.png keeps every label inside the figure
and inside its bar, fills its width, and names the epoch results.json and the console name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread
from matplotlib.text import Text

from avaf.shared.avqa.question_types import TYPES
from avaf.train import plots

TITLE = "QOAF's δ per question type (test, selected epoch 4)"
#: a model that leans hard on one modality per type: the segments of 0.03 are where labels used to spill
LEANING = {t: [0.97, 0.03] if i % 2 else [0.03, 0.97] for i, t in enumerate(TYPES)}
NOTE = "constant by construction: " + "the same vector for every question, " * 5


def drawn(fig):
    FigureCanvasAgg(fig).draw()
    return fig.canvas.get_renderer()


@pytest.mark.parametrize(("deltas", "note"), [(LEANING, None), ({t: LEANING[t] for t in TYPES[:2]}, NOTE)])
def test_delta_labels_lie_inside_the_figure_and_their_bars(deltas, note):
    fig = plots.delta_figure(deltas, TITLE, note)
    renderer = drawn(fig)
    box, (ax,) = fig.bbox, fig.axes
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    for t in texts:  # type labels, tick labels, title, note, legend, values
        e = t.get_window_extent(renderer)
        assert box.x0 <= e.x0 and e.x1 <= box.x1 and box.y0 <= e.y0 and e.y1 <= box.y1, t.get_text()
    values = [t for t in ax.texts if t.get_text()]
    assert [t.get_text() for t in values] == ["0.97"] * len(deltas)  # the 0.03 segments are too narrow
    axes = ax.get_window_extent(renderer)
    for t in values:  # each number inside the axes, so never white on the white margin
        e = t.get_window_extent(renderer)
        assert axes.x0 <= e.x0 and e.x1 <= axes.x1, t.get_text()
    assert axes.width > 0.55 * box.width  # the bars take most of the width (measured 0.69, 0.76)


def test_delta_png_has_no_empty_band(tmp_path):
    """The saved image's ink spans nearly all of it: no blank third beside the bars (measured 97% wide)."""
    path = plots.delta_bars(LEANING, tmp_path / "delta.png", TITLE)
    pixels = imread(path)[..., :3]
    ink = (pixels < 0.95).any(axis=-1)  # not white
    cols, rows = np.flatnonzero(ink.any(axis=0)), np.flatnonzero(ink.any(axis=1))
    assert (cols[-1] - cols[0] + 1) / pixels.shape[1] > 0.93, pixels.shape
    assert (rows[-1] - rows[0] + 1) / pixels.shape[0] > 0.9, pixels.shape
    # and no column of the middle two thirds is empty (the bars run across it)
    third = pixels.shape[1] // 3
    assert ink[:, third : 2 * third].any(axis=0).all()


def test_delta_and_curves_name_the_epoch_results_json_names(tmp_path, monkeypatch):
    """results.json's best_epoch counts from 1: the title says it as it is, the curve marks that epoch."""
    metrics = [
        {"epoch": e, "lr": 1e-4, "loss_ce": 2.0 - e / 10, "val": {"All": 40.0 + e, "Audio": None}}
        for e in range(5)
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    results = {"best_epoch": 4, "delta_per_type": {"test": {"Audio/Counting": [0.4, 0.6]}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    seen = {}
    monkeypatch.setattr(
        plots, "delta_bars", lambda d, path, title, note=None: seen.setdefault("title", title)
    )
    monkeypatch.setattr(plots, "save", lambda fig, path: seen.setdefault("curves", fig))
    plots.write_run_plots(tmp_path)
    assert seen["title"] == TITLE
    acc = seen["curves"].axes[1]
    (marker,) = [line for line in acc.get_lines() if line.get_label() == "selected"]
    assert list(marker.get_xdata()) == [4, 4]
