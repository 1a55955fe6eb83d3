"""The comparison page's scores: each target's pass rate with its interval,
the significance panel (p, who is better on how many rows, the verdict in
words) and the agreement panel with the disagreeing cells."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.models import Rating
from tests.api.test_comparison_scores_api import comparison_of, verdicts

pytestmark = pytest.mark.django_db


def test_the_page_shows_rates_significance_and_agreement(
    client: Any, alice: Any, bob: Any, team: Any
) -> None:
    comparison, (a, b) = comparison_of(team, 12)
    verdicts(a, "exact", [False] * 9 + [True, True, None])
    verdicts(b, "exact", [True] * 9 + [False, True, True])
    verdicts(a, "judge", [True, False] + [True] * 10)
    verdicts(b, "judge", [True] * 12)
    Rating.objects.create(job=a, index=0, user=alice, score=1)
    Rating.objects.create(job=a, index=1, user=alice, score=1)  # the judge said fail
    Rating.objects.create(job=b, index=0, user=bob, score=1)
    client.force_login(alice)
    html = client.get(f"/comparisons/{comparison.pk}/").content.decode()
    panel = html.split('id="comparison-scores"')[1].split("</section>")[0]
    assert "18 %" in panel  # T1 exact: 2 of 11
    assert "100 %" in panel  # T2 exact: 11 of 11
    assert "T1 better on 1 row, T2 better on 9" in panel
    assert "0.0215" in panel
    assert "difference is more than chance (p &lt; 0.05)" in panel
    assert "difference could be chance" in panel  # the judge: no discordant row
    assert "66.7 %" in panel  # 2 of 3 cells agree
    assert "1 cell where judge and the reviewers disagree" in panel
    assert 'href="?after=0#row-1">Row 2 · T1</a>: judge fail, reviewers 👍' in panel


def test_no_scorers_no_panel(client: Any, alice: Any, team: Any) -> None:
    comparison, _ = comparison_of(team, 2, scorers=[])
    client.force_login(alice)
    page = client.get(f"/comparisons/{comparison.pk}/")
    assert page.status_code == 200 and 'id="comparison-scores"' not in page.content.decode()
