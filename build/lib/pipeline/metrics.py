"""Multi-label metrics for chest X-ray classifiers, as plain functions on numpy arrays.

Every number is computed with scikit-learn so it matches what a reader gets from the saved predictions.
A finding whose labels are all 0 (or all 1) in a split has no AUROC, F1 or AP worth reporting: it is left
out of the per-finding keys and of the means, with a warning naming it, instead of crashing an evaluation
on a small or unlucky split. If no finding at all is defined, the means (`auroc_mean`, `f1_macro`,
`f1_macro_tuned`, `map`) and `auroc_micro` are NaN, so that `eval_auroc_mean` always exists for the Trainer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy.special import expit
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score
from transformers import EvalPrediction

DEFAULT_THRESHOLD = 0.5
# The `evaluate` module wrapping `compute_metrics`: `evaluate.load(str(EVALUATE_METRIC_DIR))` works offline.
EVALUATE_METRIC_DIR = Path(__file__).parent / "evaluate_metric" / "chestxray14"


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Probabilities from logits, in float64 (logits may come from float16/bfloat16 models)."""
    return expit(np.asarray(logits, dtype=np.float64))


def _check_inputs(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Validate shapes and values; return float64 probabilities and integer labels."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise ValueError(f"probs must have shape (N, {len(names)}) (one column per finding), got {probs.shape}")
    if labels.shape != probs.shape:
        raise ValueError(f"labels shape {labels.shape} differs from probs shape {probs.shape}")
    if not np.isfinite(probs).all():
        raise ValueError(f"probs contain {int((~np.isfinite(probs)).sum())} NaN/inf values")
    if probs.size and (probs.min() < 0 or probs.max() > 1):
        raise ValueError(
            f"probs must be probabilities in [0, 1], got values in [{probs.min():.3g}, {probs.max():.3g}]; "
            "apply a sigmoid to logits first"
        )
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be 0/1 multi-hot, got values {np.unique(labels)[:10].tolist()}")
    return probs, labels.astype(np.int64)


def defined_findings(labels: np.ndarray, names: Sequence[str]) -> list[int]:
    """Column indices of findings with both positives and negatives; warn about the others."""
    positives = np.asarray(labels).sum(axis=0)
    defined = [j for j in range(len(names)) if 0 < positives[j] < len(labels)]
    undefined = [names[j] for j in range(len(names)) if j not in defined]
    if undefined:
        warnings.warn(
            f"metrics undefined (only one class present in {len(labels)} samples), left out of the means: "
            + ", ".join(undefined),
            stacklevel=3,
        )
    return defined


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def compute_metrics(
    probs: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The CONTRACT's metrics for sigmoid `probs` (N, F) against multi-hot `labels` (N, F).

    `thresholds` (finding name → threshold, e.g. from `choose_thresholds` on validation) adds `f1_macro_tuned`.
    A prediction is positive when its probability is >= the threshold (as in `precision_recall_curve`).
    """
    probs, labels = _check_inputs(probs, labels, names)
    defined = defined_findings(labels, names)
    predicted = probs >= DEFAULT_THRESHOLD
    metrics: dict[str, float] = {}
    aurocs = []
    for j in defined:
        aurocs.append(float(roc_auc_score(labels[:, j], probs[:, j])))
        metrics[f"auroc_{names[j]}"] = aurocs[-1]
    metrics["auroc_mean"] = _mean(aurocs)
    metrics["auroc_micro"] = float(roc_auc_score(labels.ravel(), probs.ravel())) if defined else float("nan")
    metrics["accuracy"] = float(np.mean(predicted == labels))
    metrics["accuracy_all_negative"] = float(np.mean(labels == 0))
    metrics["f1_macro"] = _mean([float(f1_score(labels[:, j], predicted[:, j], zero_division=0)) for j in defined])
    if thresholds is not None:
        missing = [names[j] for j in defined if names[j] not in thresholds]
        if missing:
            raise KeyError(f"thresholds has no entry for: {', '.join(missing)}")
        metrics["f1_macro_tuned"] = _mean(
            [float(f1_score(labels[:, j], probs[:, j] >= thresholds[names[j]], zero_division=0)) for j in defined]
        )
    metrics["map"] = _mean([float(average_precision_score(labels[:, j], probs[:, j])) for j in defined])
    return metrics


def _best_f1_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(labels, probs)
    # The last precision/recall pair (1, 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(thresholds[int(np.argmax(f1))])


def choose_thresholds(probs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Per finding, the threshold maximising F1 on these (validation) predictions; 0.5 when undefined."""
    probs, labels = _check_inputs(probs, labels, names)
    defined = set(defined_findings(labels, names))
    return {
        name: _best_f1_threshold(labels[:, j], probs[:, j]) if j in defined else DEFAULT_THRESHOLD
        for j, name in enumerate(names)
    }


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
