"""The one-line summaries a person reads: the health reason names every condition, the budget's
posts left say whether they are the day's or the billing cycle's."""

from __future__ import annotations

from collector.telemetry.health import DEGRADED, FAILING, Health
from collector.telemetry.status import spend_line


def test_a_failing_condition_comes_first_and_a_degraded_one_is_still_named() -> None:
    health = Health()
    health.report("spool", DEGRADED, "spool disk full or failing: 3 bytes held in memory")
    health.report("s3", FAILING, "uploads to s3://b/p failing: AccessDenied")
    assert health.state() == (
        FAILING,
        "uploads to s3://b/p failing: AccessDenied; "
        "spool disk full or failing: 3 bytes held in memory",
    )
    assert health.behind() == ["s3"]


def spend(budget: dict, today: int) -> str:
    status = {
        "spend_usd_cycle": 1.0,
        "spend_usd_today": 1.0,
        "billable_posts_today": today,
        "billing_cycle_start": "2026-12-01",
        "budget": budget,
    }
    line = spend_line(status)
    assert line is not None
    return line


def test_a_monthly_budget_counts_the_posts_left_this_billing_cycle() -> None:
    line = spend({"usd_per_month": 2, "remaining_posts_today": 159}, 241)
    assert line.endswith("budget usd_per_month 2 (159 posts left this billing cycle)")
    daily = spend({"posts_per_day": 400, "remaining_posts_today": 159}, 241)
    assert daily.endswith("budget posts_per_day 400 (159 posts left today)")
    # both set: the one that binds first names the posts left
    both = {"posts_per_day": 10_000, "usd_per_month": 2, "remaining_posts_today": 159}
    assert spend(both, 241).endswith("(159 posts left this billing cycle)")
