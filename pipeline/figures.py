"""The report's figures as PNG files, drawn with matplotlib's object API on the Agg canvas.

`Figure` + `FigureCanvasAgg` instead of `pyplot`: no global backend state, nothing to close, and it works on
machines without a display.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sklearn.metrics import roc_curve

from pipeline.stats import CalibrationBins

DPI = 110
EMPTY_MAP_NOTE = (  # why a map can be all zero, said in the figure rather than drawn as a flat tint
    "Empty map: nothing in the last feature map raises\nthis score. Grad-CAM keeps positive evidence only:\n"
    "it is all zero when the weighted activations are\n≤ 0 everywhere (e.g. dead or saturated ReLUs in a\n"
    "small or briefly trained model)."
)


@dataclass
class ExplanationPanel:
    """One image with its heat map (same height × width, any scale) and boxes (x, y, w, h) in its pixels."""

    image: np.ndarray
    heatmap: np.ndarray
    title: str
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render `fig` to a PNG at `path` on the Agg canvas."""
    path = Path(path)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight")
    return path


def _grid(fig: Figure, count: int, columns: int) -> list:
    """`count` axes on a grid `columns` wide; the unused cells of the last row are hidden."""
    rows = math.ceil(count / columns)
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    for ax in axes[count:]:
        ax.set_visible(False)
    return list(axes[:count])


def plot_roc_curves(
    predictions: Mapping[str, np.ndarray], labels: np.ndarray, names: Sequence[str], path: str | Path
) -> Path:
    """One ROC subplot per finding, one curve per model; a finding without both classes gets a note."""
    fig = Figure(figsize=(16, 16), layout="constrained")
    for i, (ax, name) in enumerate(zip(_grid(fig, len(names), 4), names, strict=True)):
        truth = labels[:, i]
        if truth.min() == truth.max():
            ax.text(0.5, 0.5, "one class only:\nAUROC undefined", ha="center", va="center")
        else:
            for model, probs in predictions.items():
                fpr, tpr, _ = roc_curve(truth, probs[:, i])
                ax.plot(fpr, tpr, label=model)
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        ax.set(title=name, xlim=(0, 1), ylim=(0, 1), xlabel="false positive rate", ylabel="true positive rate")
    # One legend for the figure: any subplot may lack curves (a finding with one class only).
    handles = {label: handle for ax in fig.axes for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=min(len(handles), 4))
    fig.suptitle("ROC curves on the test split")
    return save_figure(fig, path)


def _series(log_history: Sequence[Mapping[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of every log entry that has `key`."""
    points = [(entry["epoch"], entry[key]) for entry in log_history if key in entry and "epoch" in entry]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path) -> Path:
    """Training loss (per logging step) and validation loss and mean AUROC (per evaluation) against epoch."""
    fig = Figure(figsize=(13, 4.5), layout="constrained")
    loss_ax, auroc_ax = fig.subplots(1, 2)
    for index, (model, history) in enumerate(histories.items()):
        color = f"C{index % 10}"
        loss_ax.plot(*_series(history, "loss"), color=color, alpha=0.6, label=f"{model} train")
        loss_ax.plot(*_series(history, "eval_loss"), color=color, marker="o", linestyle="--", label=f"{model} val")
        auroc_ax.plot(*_series(history, "eval_auroc_mean"), color=color, marker="o", label=f"{model} val")
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="binary cross-entropy")
    auroc_ax.set(title="Validation mean AUROC", xlabel="epoch", ylabel="mean AUROC")
    for ax in (loss_ax, auroc_ax):
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_reliability(bins: Mapping[str, CalibrationBins], path: str | Path) -> Path:
    """Reliability curves (predicted vs observed rate, pooled over findings) and how many predictions per bin."""
    fig = Figure(figsize=(12, 5), layout="constrained")
    curve_ax, count_ax = fig.subplots(1, 2)
    curve_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    for model, model_bins in bins.items():
        curve_ax.plot(model_bins.mean_predicted, model_bins.fraction_positive, marker="o", label=model)
        count_ax.plot(model_bins.mean_predicted, model_bins.counts, marker="o", label=model)
    curve_ax.set(
        title="Reliability",
        xlabel="mean predicted probability",
        ylabel="observed positive rate",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    count_ax.set(title="Predictions per bin", xlabel="mean predicted probability", ylabel="count", yscale="log")
    for ax in (curve_ax, count_ax):
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_explanations(panels: Sequence[ExplanationPanel], path: str | Path, title: str) -> Path:
    """Each image in grey with its heat map overlaid and the NIH boxes outlined."""
    if not panels:
        raise ValueError("no images to explain")
    fig = Figure(figsize=(4 * len(panels), 4.4))
    for ax, panel in zip(_grid(fig, len(panels), len(panels)), panels, strict=True):
        height, width = panel.image.shape[:2]
        ax.imshow(panel.image, cmap="gray", extent=(0, width, height, 0))
        if np.any(panel.heatmap):
            ax.imshow(panel.heatmap, cmap="jet", alpha=0.4, extent=(0, width, height, 0))
        else:
            ax.text(
                0.5,
                0.04,
                EMPTY_MAP_NOTE,
                transform=ax.transAxes,
                ha="center",
                va="bottom",
                fontsize="x-small",
                wrap=True,
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"},
            )
        for x, y, w, h in panel.boxes:
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="lime", linewidth=2))
        ax.set_title(panel.title, fontsize="small")
        ax.axis("off")
    fig.suptitle(title)
    return save_figure(fig, path)
