"""Statistics over seeds against closed forms: t quantiles, Student-t intervals, IQM, bootstrap, clipping."""

import math

import numpy as np
import pytest

from rfm_teach.stats import clip_band, clip_interval, iqm, iqm_ci, mean_ci, mean_ci95, t_quantile


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045)])
def test_t_quantile_matches_the_table(df, expected):
    """97.5% quantiles of Student's t from any statistics table (3 decimals)."""
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)


def test_t_quantile_closed_forms():
    # df = 1 is the Cauchy law: quantile tan(pi (p - 1/2)); df = 2: (2p - 1) sqrt(2 / (1 - (2p - 1)^2)).
    for p in (0.6, 0.9, 0.975):
        assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        a = 2 * p - 1
        assert t_quantile(p, 2) == pytest.approx(a * math.sqrt(2 / (1 - a * a)), rel=1e-10)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959964, abs=1e-6)
    for bad in ({"p": 1.0, "df": 3}, {"p": 0.5, "df": 0}, {"p": 0.5, "df": 2.5}):
        with pytest.raises(ValueError):
            t_quantile(**bad)


def test_mean_ci95_two_seeds_is_student_t_not_normal():
    """Two seeds 0 and 2: mean 1, s = sqrt(2), half-width 12.706 * sqrt(2) / sqrt(2) = 12.706 (6.5x 1.96)."""
    mean, half = mean_ci95(np.array([[0.0, 10.0], [2.0, 10.0]]))
    np.testing.assert_allclose(mean, [1.0, 10.0])
    np.testing.assert_allclose(half, [12.7062047, 0.0], rtol=1e-6)
    assert half[0] / 1.96 > 6.4


def test_mean_ci_skips_nan_and_one_seed_has_no_interval():
    values = np.array([[1.0, 1.0], [3.0, np.nan], [5.0, np.nan]])
    mean, half = mean_ci(values)
    assert mean.tolist() == [3.0, 1.0]
    assert half[0] == pytest.approx(t_quantile(0.975, 2) * 2.0 / math.sqrt(3))
    assert math.isnan(half[1])  # one finite value: no interval
    m, h = mean_ci([1.0, 2.0, 3.0], 0.9)  # 1-D input: floats
    assert m == 2.0 and h == pytest.approx(t_quantile(0.95, 2) / math.sqrt(3))


def test_student_t_interval_covers_95_percent():
    """Coverage by simulation: 4 seeds from N(0, 1), 4000 repetitions, the interval holds 0 ~95% of the time."""
    rng = np.random.default_rng(0)
    values = rng.normal(size=(4, 4000))
    mean, half = mean_ci95(values)
    coverage = float(np.mean(np.abs(mean) <= half))
    assert 0.935 < coverage < 0.965
    normal = float(np.mean(np.abs(mean) <= 1.96 * values.std(0, ddof=1) / 2))
    assert normal < 0.90  # the normal approximation undercovers with 4 seeds


def test_iqm_is_rliables_trimmed_mean():
    assert iqm(np.arange(8.0)) == pytest.approx(3.5)  # drops 0, 1 and 6, 7: mean of 2..5
    assert iqm([1.0, 2.0, 100.0]) == pytest.approx(103 / 3)  # n < 4: nothing dropped
    assert iqm([0.0, 1.0, 2.0, 1000.0]) == pytest.approx(1.5)  # one outlier seed does not move it
    table = np.arange(12.0).reshape(4, 3)
    assert iqm(table, axis=None) == pytest.approx(5.5)
    np.testing.assert_allclose(iqm(table, axis=0), [4.5, 5.5, 6.5])
    with pytest.raises(ValueError, match="NaN"):
        iqm([1.0, np.nan])


def test_iqm_ci_bootstrap_brackets_the_iqm_and_is_reproducible():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(10, 3)) + np.array([0.0, 5.0, 10.0])
    point, lo, hi = iqm_ci(scores, n_boot=500, seed=3)
    assert lo <= point <= hi and hi - lo < 3.0
    assert iqm_ci(scores, n_boot=500, seed=3) == (point, lo, hi)
    # Stratified: every replicate keeps 10 runs of every task, so constant tasks give a zero-width interval.
    point, lo, hi = iqm_ci(np.tile([1.0, 2.0, 3.0, 4.0], (6, 1)), n_boot=200)
    assert point == lo == hi == pytest.approx(2.5)
    with pytest.raises(ValueError, match="n_boot"):
        iqm_ci(scores, n_boot=0)


def test_bands_clip_to_the_metric_range():
    lo, hi = clip_band(np.array([0.1, 0.5, 0.95]), np.array([0.3, 0.1, 0.2]), 0.0, 1.0)
    np.testing.assert_allclose(lo, [0.0, 0.4, 0.75])
    np.testing.assert_allclose(hi, [0.4, 0.6, 1.0])
    lo, hi = clip_band(np.array([1.0]), np.array([np.nan]))  # one seed: zero width, no range
    assert lo.tolist() == hi.tolist() == [1.0]
    lo, hi = clip_interval([-1.0, 2.0], [3.0, 5.0], low=0.0)
    assert lo.tolist() == [0.0, 2.0] and hi.tolist() == [3.0, 5.0]
    with pytest.raises(ValueError, match="low <= high"):
        clip_band([0.0], [1.0], 1.0, 0.0)
