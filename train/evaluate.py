"""Evaluation as in the paper's tables (eq. 15): accuracy per question type, per modality, overall.

Also keeps QOAF's modality weights δ1 (visual), δ2 (audio) per question, and their mean per type, so a
user can see which modality each question type leaned on; a model whose δ cannot depend on the question
says so in its `delta_note` (the authors' variant), which the results and delta.png carry.

    avaf-eval --feats feats.h5 --checkpoint runs/avaf/best --split test [--subset real]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from avaf.shared.avqa.question_types import OVERALL, TYPES, markdown_table, type_table

from .data import Shape, SplitData, gather


@dataclass
class Evaluation:
    split: str
    table: dict[str, float]  # the paper's row: 9 types, 3 modality averages, overall (OVERALL)
    delta_per_type: dict[str, list[float]]  # mean (δ_visual, δ_audio) per type; empty without QOAF
    question_id: np.ndarray  # (Q,)
    predicted: np.ndarray  # (Q,) answer index
    correct: np.ndarray  # (Q,) bool
    delta: np.ndarray | None  # (Q, 2)
    delta_note: str | None = None  # the model's word on what its δ means, e.g. "constant by construction"

    @property
    def accuracy(self) -> float:
        return float(self.table[OVERALL])


@torch.inference_mode()
def predict(
    model: nn.Module, data: SplitData, shape: Shape, batch_size: int, amp_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Predicted answer per question (Q,), and δ (Q, 2) or None."""
    model.eval()
    device = data.device
    preds = torch.zeros(len(data), dtype=torch.int64, device=data.answer.device)
    deltas = None
    for features, rows in data.parts():  # in memory the split itself; streamed, its blocks in file order
        rows = rows.to(preds.device)  # where the split lives: nothing below waits for the GPU
        for a in range(0, len(rows), batch_size):
            batch, _ = gather(data, features, rows[a : a + batch_size], shape)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                out = model(batch)
            preds[rows[a : a + batch_size]] = out.logits.argmax(dim=-1).to(preds.device)
            if out.delta is not None:
                deltas = torch.zeros(len(data), 2, device=preds.device) if deltas is None else deltas
                deltas[rows[a : a + batch_size]] = out.delta.float().to(preds.device)
    return preds.cpu(), None if deltas is None else deltas.cpu()


def evaluate(
    model: nn.Module, data: SplitData, shape: Shape, batch_size: int, amp_dtype: torch.dtype | None = None
) -> Evaluation:
    """The paper's table row for one split, with δ per question and per type."""
    pred, delta = predict(model, data, shape, batch_size, amp_dtype)
    correct = (pred.cpu() == data.answer.cpu()).numpy()
    qtype = data.qtype.cpu().numpy()
    types = [TYPES[i] for i in qtype]
    delta_np = delta.cpu().numpy() if delta is not None else None
    per_type = {}
    if delta_np is not None:
        for i, name in enumerate(TYPES):
            sel = qtype == i
            if sel.any():
                per_type[name] = [round(float(x), 4) for x in delta_np[sel].mean(axis=0)]
    return Evaluation(
        split=data.name,
        table=type_table(types, correct.tolist()),
        delta_per_type=per_type,
        question_id=data.question_id,
        predicted=pred.cpu().numpy(),
        correct=correct,
        delta=delta_np,
        delta_note=getattr(model, "delta_note", None),
    )


def results_markdown(rows: dict[str, Evaluation]) -> str:
    """The paper's table, one row per evaluation (e.g. val and test), and the model's δ note if it has one."""
    notes = {ev.delta_note for ev in rows.values() if ev.delta_note}
    table = markdown_table({name: ev.table for name, ev in rows.items()})
    return table + "".join(f"\nδ per question type: {note}\n" for note in sorted(notes))
