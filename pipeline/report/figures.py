"""The report's figures: ROC curves, reliability, training curves and where each model looks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline import explain, figures
from pipeline.report.numbers import Evaluation
from pipeline.report.reading import Run, TestSplit


def explain_targets(
    test: TestSplit, boxes: Mapping[str, Sequence[explain.Box]], count: int
) -> list[tuple[int, str | None]]:
    """(test index, finding) of the images to explain: boxed images first, then positives, then the rest.

    The finding is the first boxed one, else the first true one, else None (the model's most probable).
    """

    def target(i: int) -> str | None:
        image_id = test.image_ids[i]
        if boxes.get(image_id):
            return boxes[image_id][0].finding
        positives = np.flatnonzero(test.labels[i])
        return test.names[positives[0]] if positives.size else None

    order = sorted(
        range(len(test.image_ids)), key=lambda i: (not boxes.get(test.image_ids[i]), not test.labels[i].any(), i)
    )
    return [(i, target(i)) for i in order[:count]]


def explanation_figure(
    run: Run,
    test: TestSplit,
    targets: Sequence[tuple[int, str | None]],
    boxes: Mapping[str, Sequence[explain.Box]],
    path: Path,
    trust_remote_code: bool = False,
) -> dict[str, Path]:
    """Maps of one run's model on the chosen test images, one PNG per map the model offers (Grad-CAM for the
    finding; for ViTs also attention rollout, the same for every finding): method → path."""
    model, processor = explain.load_model(run.path, trust_remote_code)
    images = test.dataset.select([i for i, _ in targets])["image"]
    ids = [test.image_ids[i] for i, _ in targets]
    paths = {}
    for method in explain.methods(model):
        results = [
            explain.explain_image(model, processor, image, finding, boxes.get(image_id, ()), method)
            for (_, finding), image, image_id in zip(targets, images, ids, strict=True)
        ]
        panels = [
            figures.ExplanationPanel(r.image, r.heatmap, f"{image_id}\n{r.finding} p={r.probability:.2f}", r.boxes)
            for r, image_id in zip(results, ids, strict=True)
        ]
        suffix = "" if method == explain.GRAD_CAM else "_rollout"
        paths[method] = figures.plot_explanations(panels, path.with_stem(path.stem + suffix), f"{run.name}: {method}")
    return paths


def write_figures(
    runs: Sequence[Run],
    test: TestSplit,
    evaluation: Evaluation,
    output: Path,
    explain_images: int,
    bbox_csv: Path | None,
    trust_remote_code: bool = False,
) -> dict[str, Path]:
    """Every figure of the report, title → PNG path."""
    probs = {run.name: run.probs for run in runs}
    paths = {
        "ROC curves per finding": figures.plot_roc_curves(probs, test.labels, test.names, output / "roc_curves.png"),
        "Reliability": figures.plot_reliability(evaluation.calibration, output / "reliability.png"),
    }
    histories = {run.name: run.log_history for run in runs if run.log_history}
    if histories:
        paths["Training curves"] = figures.plot_training_curves(histories, output / "training_curves.png")
    if explain_images > 0:
        boxes = explain.read_bbox_csv(bbox_csv, test.names) if bbox_csv else {}
        targets = explain_targets(test, boxes, explain_images)
        for run in runs:
            maps = explanation_figure(run, test, targets, boxes, output / f"explain_{run.name}.png", trust_remote_code)
            for method, path in maps.items():
                paths[f"Where {run.name} looks ({method})"] = path
    return paths
