"""Uncertainty for the comparison report: bootstrap over patients, paired differences, calibration.

A patient's follow-up images are correlated, so every resample draws *patients* with replacement and keeps all
of their images; resampling images would understate the width of each interval. The functions take the
statistic as a callable so that the metric itself stays in `pipeline.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided bootstrap percentile interval."""

    estimate: float
    low: float
    high: float

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high


@dataclass(frozen=True)
class PairedDifference:
    """Difference A − B of a statistic on the same images, its interval and a two-sided bootstrap p-value."""

    difference: Interval
    p_value: float


@dataclass(frozen=True)
class CalibrationBins:
    """Equal-width probability bins: mean predicted probability, observed positive rate and size per bin."""

    mean_predicted: np.ndarray
    fraction_positive: np.ndarray
    counts: np.ndarray


def patient_resample_weights(patient_ids: Sequence[int] | np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Yield `n_boot` resamples as image weights: patients are drawn with replacement (as many as there are), and
    each image weighs as often as its patient was drawn.

    The same `seed` and `patient_ids` give the same resamples, which is what makes a bootstrap *paired*.
    """
    if n_boot < 1:
        raise ValueError(f"the number of bootstrap resamples must be at least 1, got {n_boot}")
    patient_ids = np.asarray(patient_ids)
    if patient_ids.size == 0:
        raise ValueError("cannot bootstrap an empty set of images")
    patients, inverse = np.unique(patient_ids, return_inverse=True)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        drawn = np.bincount(rng.integers(0, len(patients), size=len(patients)), minlength=len(patients))
        yield drawn[inverse].astype(float)


def bootstrap_distribution(
    statistic: Callable[[np.ndarray], float | Sequence[float] | np.ndarray],
    patient_ids: Sequence[int] | np.ndarray,
    n_boot: int,
    seed: int,
) -> np.ndarray:
    """Evaluate `statistic(image_weights)` on every patient resample: shape (n_boot, k) for a k-valued statistic.

    Computing several models' statistics in one call reuses each resample, so their differences are paired.
    """
    resamples = patient_resample_weights(patient_ids, n_boot, seed)
    return np.stack([np.atleast_1d(np.asarray(statistic(weights), dtype=float)) for weights in resamples])


def percentile_interval(estimate: float, samples: np.ndarray, level: float = DEFAULT_LEVEL) -> Interval:
    """Percentile interval of bootstrap `samples` (NaN resamples, where the statistic is undefined, skipped)."""
    samples = np.asarray(samples, dtype=float)
    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return Interval(estimate, float("nan"), float("nan"))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return Interval(float(estimate), float(low), float(high))


def bootstrap_p_value(differences: np.ndarray) -> float:
    """Two-sided p-value for "no difference": twice the smaller share of resamples on either side of zero.

    The +1 terms keep it above zero: with B resamples nothing below 2/(B+1) can be claimed.
    """
    differences = np.asarray(differences, dtype=float)
    differences = differences[~np.isnan(differences)]
    if differences.size == 0:
        return float("nan")
    one_side = min(np.sum(differences <= 0), np.sum(differences >= 0))
    return float(min(1.0, 2.0 * (one_side + 1) / (differences.size + 1)))


def paired_difference(
    estimate_a: float,
    estimate_b: float,
    samples_a: np.ndarray,
    samples_b: np.ndarray,
    level: float = DEFAULT_LEVEL,
) -> PairedDifference:
    """A − B from point estimates and bootstrap samples drawn on the *same* resamples of the same images."""
    samples_a, samples_b = np.asarray(samples_a, dtype=float), np.asarray(samples_b, dtype=float)
    if samples_a.shape != samples_b.shape:
        raise ValueError(f"paired samples differ in shape: {samples_a.shape} vs {samples_b.shape}")
    differences = samples_a - samples_b
    return PairedDifference(
        percentile_interval(estimate_a - estimate_b, differences, level), bootstrap_p_value(differences)
    )


class RankedScores:
    """AUROC of every column of a score matrix under any weighting of its rows, sorting only once.

    A bootstrap resample is a weighting (how often each image was drawn), so the sort, the costly part, is shared
    by all resamples: ~20× faster than `roc_auc_score` per column and resample, which makes 1,000 resamples ×
    models × subgroups on the 25,596 test images affordable.
    Ties count one half, as in the Mann–Whitney statistic and `sklearn.metrics.roc_auc_score`.
    """

    def __init__(self, probs: np.ndarray, labels: np.ndarray):
        probs, labels = np.asarray(probs, dtype=float), np.asarray(labels, dtype=float)
        if probs.shape != labels.shape or probs.ndim != 2:
            raise ValueError(f"probs {probs.shape} and labels {labels.shape} must be the same (N, F) shape")
        self.order = np.argsort(probs, axis=0, kind="stable")
        scores = np.take_along_axis(probs, self.order, axis=0)
        self.labels = np.take_along_axis(labels, self.order, axis=0)
        rows = np.broadcast_to(np.arange(len(probs))[:, None], probs.shape)
        starts = np.ones(probs.shape, dtype=bool)
        starts[1:] = scores[1:] != scores[:-1]
        ends = np.ones(probs.shape, dtype=bool)
        ends[:-1] = starts[1:]
        # For each sorted row: where its group of tied scores starts, and one past where it ends.
        self.tie_start = np.maximum.accumulate(np.where(starts, rows, 0), axis=0)
        self.tie_stop = np.minimum.accumulate(np.where(ends, rows + 1, len(probs))[::-1], axis=0)[::-1]

    def aurocs(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Per-column AUROC with row `weights` (default: all 1); NaN where a column lacks either class."""
        weights = np.ones(len(self.order)) if weights is None else np.asarray(weights, dtype=float)
        positive = weights[self.order] * self.labels
        negative = weights[self.order] - positive
        below = np.zeros((len(negative) + 1, negative.shape[1]))
        np.cumsum(negative, axis=0, out=below[1:])
        # Negatives scored lower count 1, tied negatives 1/2: the mean of the counts below and through the tie.
        beaten = (np.take_along_axis(below, self.tie_start, 0) + np.take_along_axis(below, self.tie_stop, 0)) / 2
        pairs = positive.sum(axis=0) * negative.sum(axis=0)
        aurocs = np.full(pairs.shape, np.nan)
        np.divide((positive * beaten).sum(axis=0), pairs, out=aurocs, where=pairs > 0)
        return aurocs

    def mean(self, weights: np.ndarray | None = None) -> float:
        """Mean AUROC over the columns with both classes (the contract's `auroc_mean`); NaN if there are none."""
        aurocs = self.aurocs(weights)
        return float(np.nanmean(aurocs)) if not np.isnan(aurocs).all() else float("nan")


def calibration_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> CalibrationBins:
    """Bin predictions into `n_bins` equal-width bins on [0, 1]; empty bins are dropped."""
    probs, labels = np.ravel(probs).astype(float), np.ravel(labels).astype(float)
    if probs.shape != labels.shape:
        raise ValueError(f"probabilities and labels differ in size: {probs.size} vs {labels.size}")
    if probs.size and (probs.min() < 0.0 or probs.max() > 1.0):
        raise ValueError("probabilities must lie in [0, 1]")
    bins = np.minimum((probs * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    kept = counts > 0
    mean_predicted = np.bincount(bins, weights=probs, minlength=n_bins)[kept] / counts[kept]
    fraction_positive = np.bincount(bins, weights=labels, minlength=n_bins)[kept] / counts[kept]
    return CalibrationBins(mean_predicted, fraction_positive, counts[kept])


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the bin-size-weighted mean gap between predicted probability and observed positive rate."""
    bins = calibration_bins(probs, labels, n_bins)
    if bins.counts.sum() == 0:
        return float("nan")
    gaps = np.abs(bins.mean_predicted - bins.fraction_positive)
    return float(np.sum(gaps * bins.counts) / bins.counts.sum())
