"""Multi-label chest X-ray metrics (NIH ChestX-ray14), as plain numpy functions and as an `evaluate` module.

This file is the one implementation of the metrics and is self-contained (numpy, scikit-learn, `evaluate`), so the
folder can be copied elsewhere or published as a Hub metric Space; `pipeline.metrics` imports its functions.

    metric = evaluate.load("path/to/chestxray14")                 # offline, by path
    metric.add_batch(predictions=probs, references=labels)       # (N, 14) sigmoid probabilities, 0/1 labels
    metric.compute(thresholds={"Atelectasis": 0.31, ...})        # names default to the 14 ChestX-ray14 findings

Every number is computed with scikit-learn so it matches what a reader gets from saved predictions. A finding whose
labels are all 0 (or all 1) has no AUROC, F1 or AP worth reporting: it is left out of the per-finding keys and of
the means, with a warning naming it, instead of crashing an evaluation on a small or unlucky split. If no finding is
defined, the means (`auroc_mean`, `f1_macro`, `f1_macro_tuned`, `map`) and `auroc_micro` are NaN, so that
`eval_auroc_mean` always exists for a `transformers.Trainer`.
"""

import warnings
from collections.abc import Mapping, Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score

DEFAULT_THRESHOLD = 0.5
# NIH's 14 findings in their alphabetical column order (the default `names`).
CHESTXRAY14_FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)


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
    names: Sequence[str] = CHESTXRAY14_FINDINGS,
    thresholds: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Metrics of sigmoid `probs` (N, F) against multi-hot `labels` (N, F), F = len(names).

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
    best = int(np.argmax(f1))
    # Halfway to the next lower score (or to 0), not on a score: the same decisions on these predictions, and
    # the same again from a copy of them rounded when written (a CSV, a JSON).
    below = thresholds[best - 1] if best > 0 else 0.0
    return float((below + thresholds[best]) / 2)


def choose_thresholds(
    probs: np.ndarray, labels: np.ndarray, names: Sequence[str] = CHESTXRAY14_FINDINGS
) -> dict[str, float]:
    """Per finding, the threshold maximising F1 on these (validation) predictions; 0.5 when undefined."""
    probs, labels = _check_inputs(probs, labels, names)
    defined = set(defined_findings(labels, names))
    return {
        name: _best_f1_threshold(labels[:, j], probs[:, j]) if j in defined else DEFAULT_THRESHOLD
        for j, name in enumerate(names)
    }


_DESCRIPTION = """Multi-label chest X-ray metrics (NIH ChestX-ray14): per-finding and mean AUROC, pooled (micro)
AUROC, element-wise accuracy and its all-negative baseline, macro F1 at 0.5 and at tuned thresholds, and mean
average precision. Findings with a single class in the references are left out of the means, with a warning."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: sigmoid probabilities, one list of len(names) floats per image.
    references: multi-hot 0/1 labels, same shape.
    names: the finding names, in column order (default: the 14 ChestX-ray14 findings).
    thresholds: optional dict finding name -> decision threshold; adds `f1_macro_tuned`.
Returns:
    dict with auroc_mean, auroc_<Finding>, auroc_micro, accuracy, accuracy_all_negative, f1_macro,
    [f1_macro_tuned], map.
"""

_CITATION = """@inproceedings{wang2017chestxray,
  title     = {ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised
               Classification and Localization of Common Thorax Diseases},
  author    = {Wang, Xiaosong and Peng, Yifan and Lu, Le and Lu, Zhiyong and Bagheri, Mohammadhadi and
               Summers, Ronald M.},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {3462--3471},
  year      = {2017}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chestxray14(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float64")),
                    "references": datasets.Sequence(datasets.Value("float64")),
                }
            ),
        )

    def _compute(
        self,
        predictions: np.ndarray,
        references: np.ndarray,
        names: Sequence[str] = CHESTXRAY14_FINDINGS,
        thresholds: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        return compute_metrics(predictions, references, list(names), thresholds)
