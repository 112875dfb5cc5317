"""The project's metrics: the `evaluate` module's functions, plus the glue `transformers.Trainer` needs.

The computation lives in `evaluate_metric/chestxray14/chestxray14.py`, self-contained so that the `evaluate` module
can be copied or published on its own (`evaluate.load(str(EVALUATE_METRIC_DIR))` works offline); importing it here
keeps one implementation for training, reports and anyone loading the metric by path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.special import expit
from transformers import EvalPrediction

from pipeline.evaluate_metric.chestxray14.chestxray14 import (
    DEFAULT_THRESHOLD,
    choose_thresholds,
    compute_metrics,
    defined_findings,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "EVALUATE_METRIC_DIR",
    "choose_thresholds",
    "compute_metrics",
    "defined_findings",
    "make_compute_metrics",
    "sigmoid",
]

# The `evaluate` module's folder: `evaluate.load(str(EVALUATE_METRIC_DIR))` works offline.
EVALUATE_METRIC_DIR = Path(__file__).parent / "evaluate_metric" / "chestxray14"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits, in float64 (logits may come from float16/bfloat16 models)."""
    return expit(np.asarray(logits, dtype=np.float64))


def make_compute_metrics(
    names: Sequence[str], thresholds: Mapping[str, float] | None = None
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` for `transformers.Trainer`: logits → sigmoid → `compute_metrics`."""

    def trainer_compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        return compute_metrics(sigmoid(logits), eval_prediction.label_ids, names, thresholds)

    return trainer_compute_metrics
