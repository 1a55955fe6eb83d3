"""McNemar's exact test and Cohen's kappa against textbook values."""

from __future__ import annotations

import pytest

from dashboard.evals.significance import cohen_kappa, mcnemar_exact, verdict


@pytest.mark.parametrize(
    ("b", "c", "p"),
    [
        (1, 9, 0.021484375),  # 2 * (1 + 10) / 1024
        (9, 1, 0.021484375),
        (5, 5, 1.0),
        (0, 6, 0.03125),
        (0, 5, 0.0625),
        (0, 0, 1.0),
        (3, 0, 0.25),
        (10, 20, 0.09873714),  # 2 * P(X <= 10), X ~ Bin(30, 1/2)
    ],
)
def test_mcnemar_exact_matches_the_binomial_tail(b: int, c: int, p: float) -> None:
    assert mcnemar_exact(b, c) == pytest.approx(p, abs=1e-8)


def test_mcnemar_exact_stays_finite_on_many_rows() -> None:
    assert mcnemar_exact(5000, 5000) == pytest.approx(1.0)
    assert 0.0 <= mcnemar_exact(4800, 5200) < 0.01
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_kappa_of_the_classic_table() -> None:
    # [[20, 5], [10, 15]]: observed 0.7, expected 0.5, kappa 0.4
    result = cohen_kappa(20, 5, 10, 15)
    assert result["cells"] == 50
    assert result["percent"] == pytest.approx(70.0)
    assert result["kappa"] == pytest.approx(0.4)


def test_kappa_all_agree_and_undefined() -> None:
    assert cohen_kappa(7, 0, 0, 3)["kappa"] == pytest.approx(1.0)
    # Both raters always say pass: chance agreement is 1, kappa is undefined.
    assert cohen_kappa(8, 0, 0, 0) == {"cells": 8, "percent": 100.0, "kappa": None}
    assert cohen_kappa(0, 0, 0, 0) == {"cells": 0, "percent": None, "kappa": None}
    # Complete disagreement with balanced marginals: kappa -1.
    assert cohen_kappa(0, 5, 5, 0)["kappa"] == pytest.approx(-1.0)


def test_verdict_words() -> None:
    assert verdict(0.01) == "difference is more than chance (p < 0.05)"
    assert verdict(0.5).startswith("difference could be chance")
    assert verdict(None) == "no rows scored by both"
