"""The project's metrics: the `evaluate` module's functions, plus the glue `transformers.Trainer` needs.

The computation lives in `evaluate_metric/chestxray14/chestxray14.py`, self-contained so that the `evaluate` module
can be copied or published on its own (`evaluate.load(str(EVALUATE_METRIC_DIR))` works offline); importing it here
keeps one implementation for training, reports and anyone loading the metric by path.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import expit

from pipeline.evaluate_metric.chestxray14 import chestxray14
from pipeline.evaluate_metric.chestxray14.chestxray14 import DEFAULT_THRESHOLD, compute_metrics, defined_findings

__all__ = [
    "DEFAULT_THRESHOLD",
    "EVALUATE_METRIC_DIR",
    "choose_thresholds",
    "compute_metrics",
    "defined_findings",
    "make_compute_metrics",
    "sigmoid",
]

if TYPE_CHECKING:
    from transformers import EvalPrediction

logger = logging.getLogger(__name__)
# The metric module warns at every call about findings with one class only; the same news (same findings, same
# number of samples: the same split) is logged once per process instead.
_logged: set[str] = set()

# The `evaluate` module's folder: `evaluate.load(str(EVALUATE_METRIC_DIR))` works offline.
EVALUATE_METRIC_DIR = Path(__file__).parent / "evaluate_metric" / "chestxray14"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits, in float64 (logits may come from float16/bfloat16 models)."""
    return expit(np.asarray(logits, dtype=np.float64))


@contextmanager
def _warnings_logged_once() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for message in dict.fromkeys(str(warning.message) for warning in caught):
        if message not in _logged:
            _logged.add(message)
            logger.warning(message)


def choose_thresholds(
    probs: np.ndarray, labels: np.ndarray, names: Sequence[str] = chestxray14.CHESTXRAY14_FINDINGS
) -> dict[str, float]:
    """Per finding, the threshold maximising F1 on these (validation) predictions; 0.5 when undefined."""
    with _warnings_logged_once():
        return chestxray14.choose_thresholds(probs, labels, names)


def make_compute_metrics(
    names: Sequence[str], thresholds: Mapping[str, float] | None = None
) -> Callable[[EvalPrediction], dict[str, float]]:
    """A `compute_metrics` for `transformers.Trainer`: logits → sigmoid → `compute_metrics`; the warning about
    findings with one class only is one log line per split, not a warning with its source at every evaluation."""

    def trainer_compute_metrics(eval_prediction: EvalPrediction) -> dict[str, float]:
        logits = eval_prediction.predictions
        if isinstance(logits, tuple):
            logits = logits[0]
        with _warnings_logged_once():
            return compute_metrics(sigmoid(logits), eval_prediction.label_ids, names, thresholds)

    return trainer_compute_metrics
