"""Student's t quantiles and the mean ± 95% interval of compare's tables, against tabulated
values."""

import math

import pytest

from sharpzo_ext.clip.runs.confidence import mean_ci, t_quantile


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622),
                                          (29, 2.0452), (100, 1.9840)])
def test_t_quantiles_match_the_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_at_one_half_is_zero_and_bad_arguments_are_refused():
    assert t_quantile(0.5, 3) == pytest.approx(0, abs=1e-12)
    for p, df in [(1.0, 3), (0.4, 3), (0.9, 0)]:
        with pytest.raises(ValueError, match="t_quantile"):
            t_quantile(p, df)


def test_mean_ci_of_one_to_five():
    # mean 3, sample std sqrt(2.5): half-width 2.7764 * sqrt(2.5) / sqrt(5) = 1.9632
    mean, half = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3 and half == pytest.approx(2.7764 * math.sqrt(0.5), abs=1e-4)


def test_mean_ci_skips_missing_values_and_handles_few():
    assert mean_ci([None, 2.0, None, 4.0]) == (3.0, pytest.approx(12.7062 * 1.0, abs=1e-3))
    assert mean_ci([0.7]) == (0.7, 0.0)
    assert all(math.isnan(v) for v in mean_ci([None]))
