"""`evaluate` wrapper of `pipeline.metrics.compute_metrics`, loadable offline by path.

    metric = evaluate.load("pipeline/evaluate_metric/chestxray14")   # or str(pipeline.metrics.EVALUATE_METRIC_DIR)
    metric.add_batch(predictions=probs, references=labels)           # (N, 14) sigmoid probabilities, 0/1 labels
    metric.compute(thresholds={"Atelectasis": 0.31, ...})            # names default to the 14 FINDINGS

The computation lives in `pipeline.metrics` (one implementation); this module only adapts its interface.
"""

import datasets
import evaluate

from pipeline.labels import FINDINGS
from pipeline.metrics import compute_metrics

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

_CITATION = ""


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

    def _compute(self, predictions, references, names=FINDINGS, thresholds=None) -> dict[str, float]:
        return compute_metrics(predictions, references, list(names), thresholds)
