"""How sure a difference is: McNemar's exact test on paired rows, and Cohen's
kappa between two raters. Pure functions over counts; the counts come from
one aggregate query each (``dashboard.compare.scores``, ``dashboard.evals.diff``)."""

from __future__ import annotations

from math import comb

#: Below this p value a difference is called more than chance.
ALPHA = 0.05


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """The two-sided exact McNemar p value on the discordant pairs: rows where
    only A passed (``only_a``) and only B passed (``only_b``). Under "no
    difference" each discordant row is a fair coin, so p is twice the binomial
    tail of the smaller count, capped at 1; with no discordant row, 1."""
    if only_a < 0 or only_b < 0:
        raise ValueError("Counts are 0 or more.")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(only_a, only_b) + 1))
    # Exact integers until the one division: no underflow at thousands of rows.
    return min(1.0, 2 * tail / 2**n)


def cohen_kappa(both_pass: int, only_first: int, only_second: int, both_fail: int) -> dict:
    """Agreement of two raters over binary labels, from the 2×2 table: the
    cells where both said pass, only the first did, only the second did, and
    both said fail. ``percent`` is the observed agreement (0–100); ``kappa``
    is that agreement beyond chance, None when it is undefined (no cells, or
    both raters gave one label throughout, so chance agreement is 1)."""
    counts = (both_pass, only_first, only_second, both_fail)
    if any(c < 0 for c in counts):
        raise ValueError("Counts are 0 or more.")
    n = sum(counts)
    if n == 0:
        return {"cells": 0, "percent": None, "kappa": None}
    observed = (both_pass + both_fail) / n
    first_pass = (both_pass + only_first) / n
    second_pass = (both_pass + only_second) / n
    expected = first_pass * second_pass + (1 - first_pass) * (1 - second_pass)
    kappa = None if expected >= 1 else (observed - expected) / (1 - expected)
    return {"cells": n, "percent": 100 * observed, "kappa": kappa}


def verdict(p: float | None) -> str:
    """The plain words a page shows for a p value."""
    if p is None:
        return "no rows scored by both"
    if p < ALPHA:
        return f"difference is more than chance (p < {ALPHA:g})"
    return f"difference could be chance (p ≥ {ALPHA:g})"
