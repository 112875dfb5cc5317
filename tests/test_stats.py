import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_auc_score

from pipeline import stats


def test_resamples_weigh_whole_patients():
    patient_ids = np.array([7, 7, 7, 3, 9, 9])
    for weights in stats.patient_resample_weights(patient_ids, n_boot=50, seed=1):
        # All images of a patient weigh the same: how often the patient was drawn; three patients drawn in all.
        per_patient = {p: set(weights[patient_ids == p].tolist()) for p in (7, 3, 9)}
        assert all(len(values) == 1 for values in per_patient.values())
        assert sum(values.pop() for values in per_patient.values()) == 3


def test_same_seed_same_resamples_and_different_seed_differs():
    ids = np.arange(40) // 2
    first = [w.tolist() for w in stats.patient_resample_weights(ids, 5, seed=3)]
    assert first == [w.tolist() for w in stats.patient_resample_weights(ids, 5, seed=3)]
    assert first != [w.tolist() for w in stats.patient_resample_weights(ids, 5, seed=4)]


@pytest.mark.parametrize("n_boot, ids", [(0, [1, 2]), (10, [])])
def test_resamples_reject_bad_input(n_boot, ids):
    with pytest.raises(ValueError):
        next(stats.patient_resample_weights(ids, n_boot, seed=0))


def _planted_difference_interval(seed: int, true_difference: float) -> stats.PairedDifference:
    """Two 'models' scored per image; model A is better by `true_difference` in expectation."""
    rng = np.random.default_rng(seed)
    patients = np.repeat(np.arange(60), 3)
    patient_effect = rng.normal(0, 0.1, 60)[patients]  # correlated images within a patient
    score_b = 0.6 + patient_effect + rng.normal(0, 0.1, patients.size)
    score_a = score_b + true_difference + rng.normal(0, 0.05, patients.size)

    samples = np.array(
        [
            [np.average(score_a, weights=w), np.average(score_b, weights=w)]
            for w in stats.patient_resample_weights(patients, 300, seed)
        ]
    )
    return stats.paired_difference(score_a.mean(), score_b.mean(), samples[:, 0], samples[:, 1])


def test_paired_interval_covers_the_true_difference_at_about_the_nominal_rate():
    results = [_planted_difference_interval(seed, 0.02) for seed in range(30)]
    covered = [r.difference.low <= 0.02 <= r.difference.high for r in results]
    assert np.mean(covered) >= 0.8
    assert all(r.difference.low < r.difference.estimate < r.difference.high for r in results)


def test_a_large_difference_excludes_zero_and_a_null_one_does_not():
    large = _planted_difference_interval(seed=0, true_difference=0.1)
    assert large.difference.low > 0 and large.p_value < 0.01
    null = [_planted_difference_interval(seed, 0.0) for seed in range(10)]
    assert sum(r.difference.low <= 0 <= r.difference.high for r in null) >= 8
    assert np.median([r.p_value for r in null]) > 0.2


def test_p_value_bounds():
    assert stats.bootstrap_p_value(np.full(99, 0.3)) == pytest.approx(2 / 100)
    assert stats.bootstrap_p_value(np.array([-1.0, 1.0] * 50)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        stats.paired_difference(0, 0, np.zeros(3), np.zeros(4))


def test_percentile_interval_skips_undefined_resamples():
    interval = stats.percentile_interval(0.5, np.array([np.nan, *np.linspace(0, 1, 101)]))
    assert interval.low == pytest.approx(0.025) and interval.high == pytest.approx(0.975)
    assert np.isnan(stats.percentile_interval(0.5, np.array([np.nan])).low)


def test_interval_overlap():
    assert stats.Interval(0.5, 0.4, 0.6).overlaps(stats.Interval(0.7, 0.6, 0.8))
    assert not stats.Interval(0.5, 0.4, 0.59).overlaps(stats.Interval(0.7, 0.6, 0.8))


def test_calibration_bins_match_scikit_learn():
    rng = np.random.default_rng(0)
    probs = rng.random(2000)
    labels = (rng.random(2000) < probs**2).astype(int)
    bins = stats.calibration_bins(probs, labels, n_bins=10)
    observed, predicted = calibration_curve(labels, probs, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(bins.mean_predicted, predicted)
    np.testing.assert_allclose(bins.fraction_positive, observed)
    assert bins.counts.sum() == 2000


def test_ece_is_small_when_calibrated_and_large_when_planted_overconfident():
    rng = np.random.default_rng(1)
    probs = rng.random(5000)
    labels = (rng.random(5000) < probs).astype(int)
    assert stats.expected_calibration_error(probs, labels) < 0.03
    overconfident = np.where(probs > 0.5, 0.99, 0.01)
    assert stats.expected_calibration_error(overconfident, labels) > 0.2
    # Hand-computed: two bins, predicted 0.2 and 0.8, observed 0.5 and 0.5 → mean gap 0.3.
    hand = stats.expected_calibration_error(np.array([0.2, 0.2, 0.8, 0.8]), np.array([0, 1, 0, 1]))
    assert hand == pytest.approx(0.3)


def test_calibration_rejects_values_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.calibration_bins(np.array([1.2]), np.array([1]))


def test_aurocs_equal_scikit_learn_with_ties_and_undefined_columns():
    rng = np.random.default_rng(2)
    labels = (rng.random((300, 4)) < 0.3).astype(float)
    probs = np.round(rng.random((300, 4)) * 0.5 + labels * 0.3, 1)  # rounding makes many ties
    labels[:, 3] = 0  # one class only
    patients = np.arange(300) // 3
    counts = next(stats.patient_resample_counts(patients, 1, seed=0))
    resample = np.repeat(np.arange(300), counts[patients].astype(int))  # the same resample as rows
    for p, y, ids in ((probs, labels, patients), (probs[resample], labels[resample], np.arange(len(resample)))):
        ranked = stats.PatientAUROCs(p, y, ids)
        aurocs = ranked.aurocs()
        expected = [roc_auc_score(y[:, j], p[:, j]) for j in range(3)]
        np.testing.assert_allclose(aurocs[:3], expected, rtol=0, atol=1e-12)
        assert np.isnan(aurocs[3])
        assert ranked.mean() == pytest.approx(np.mean(expected), abs=1e-12)
    # Drawing patients is weighting their rows: the resample's AUROC from counts equals the duplicated rows'.
    np.testing.assert_allclose(
        stats.PatientAUROCs(probs, labels, patients).aurocs(counts)[:3],
        stats.PatientAUROCs(probs[resample], labels[resample], np.arange(len(resample))).aurocs()[:3],
        rtol=0,
        atol=1e-12,
    )
    assert np.isnan(stats.PatientAUROCs(probs, np.zeros_like(labels), patients).mean())


def test_weighted_aurocs_equal_scikit_learn_on_the_weighted_rows():
    rng = np.random.default_rng(3)
    labels = (rng.random((200, 3)) < 0.4).astype(float)
    probs = np.round(rng.random((200, 3)) + labels * 0.3, 2)
    weights = rng.integers(0, 3, 200).astype(float)  # 0: left out, 2: drawn twice
    ranked = stats.PatientAUROCs(probs, labels, np.arange(200))  # each image its own patient
    expected = [roc_auc_score(labels[:, j], probs[:, j], sample_weight=weights) for j in range(3)]
    np.testing.assert_allclose(ranked.aurocs(weights), expected, rtol=0, atol=1e-12)
    both = ranked.aurocs(np.column_stack([weights, np.ones(200)]))
    np.testing.assert_allclose(both[:, 0], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(both[:, 1], ranked.aurocs(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        stats.PatientAUROCs(probs, labels[:, :2], np.arange(200))


class LoopReference:
    """The report's AUROC before it was vectorised (`stats.RankedScores`, one resample at a time), kept here
    as the reference the fast bootstrap must reproduce."""

    def __init__(self, probs, labels):
        self.order = np.argsort(probs, axis=0, kind="stable")
        scores = np.take_along_axis(probs, self.order, axis=0)
        self.labels = np.take_along_axis(labels, self.order, axis=0)
        rows = np.broadcast_to(np.arange(len(probs))[:, None], probs.shape)
        starts = np.ones(probs.shape, dtype=bool)
        starts[1:] = scores[1:] != scores[:-1]
        ends = np.ones(probs.shape, dtype=bool)
        ends[:-1] = starts[1:]
        self.tie_start = np.maximum.accumulate(np.where(starts, rows, 0), axis=0)
        self.tie_stop = np.minimum.accumulate(np.where(ends, rows + 1, len(probs))[::-1], axis=0)[::-1]

    def mean(self, weights):
        positive = weights[self.order] * self.labels
        negative = weights[self.order] - positive
        below = np.zeros((len(negative) + 1, negative.shape[1]))
        np.cumsum(negative, axis=0, out=below[1:])
        beaten = (np.take_along_axis(below, self.tie_start, 0) + np.take_along_axis(below, self.tie_stop, 0)) / 2
        pairs = positive.sum(axis=0) * negative.sum(axis=0)
        aurocs = np.full(pairs.shape, np.nan)
        np.divide((positive * beaten).sum(axis=0), pairs, out=aurocs, where=pairs > 0)
        return float(np.nanmean(aurocs)) if not np.isnan(aurocs).all() else float("nan")


def test_vectorised_bootstrap_equals_the_loop_it_replaced():
    """Same seed, same draws in the same order: samples, intervals and p-values to 1e-9."""
    rng = np.random.default_rng(7)
    patients = np.sort(rng.integers(0, 90, 400))
    labels = (rng.random((400, 5)) < 0.2).astype(float)
    labels[:, 4] = 0  # undefined in every resample
    models = [np.round(rng.random((400, 5)) * 0.6 + labels * 0.3, decimals) for decimals in (1, 3, 12)]
    n_boot = 37  # not a multiple of the chunk size
    references = [LoopReference(p, labels) for p in models]
    loop = np.array([[r.mean(w) for r in references] for w in stats.patient_resample_weights(patients, n_boot, 5)])
    fast = stats.bootstrap_mean_aurocs([stats.PatientAUROCs(p, labels, patients) for p in models], n_boot, 5, chunk=8)
    np.testing.assert_allclose(fast, loop, rtol=0, atol=1e-9)
    for k in (1, 2):
        old = stats.paired_difference(0.0, 0.0, loop[:, k], loop[:, 0])
        new = stats.paired_difference(0.0, 0.0, fast[:, k], fast[:, 0])
        assert abs(new.p_value - old.p_value) < 1e-9
        assert abs(new.difference.low - old.difference.low) < 1e-9
        assert abs(new.difference.high - old.difference.high) < 1e-9


def test_p_value_floor_is_two_over_resamples_plus_one():
    result = stats.paired_difference(0.8, 0.7, np.full(999, 0.8), np.full(999, 0.7))
    assert result.p_floor == pytest.approx(2 / 1000) and result.p_value == result.p_floor
