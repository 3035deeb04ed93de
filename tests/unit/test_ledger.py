"""The billing ledger: unique post ids per UTC day as X bills them, kept across restarts."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from collector.config import BudgetConfig
from collector.telemetry.ledger import (
    BillingLedger,
    billed_days,
    cycle_start,
    next_cycle_start,
    post_id_of,
)
from collector.telemetry.status import forecast_text

NOON = datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()
DAY = 86400.0


class Clock:
    def __init__(self, now: float = NOON) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_post_twice_in_one_utc_day_is_billed_once_and_again_the_next_day(tmp_path: Path):
    clock = Clock()
    ledger = BillingLedger(tmp_path, clock=clock)
    assert ledger.add(["1", "2", "2", 3]) == 3
    assert ledger.add([3, 4]) == 1
    assert ledger.billable_today() == 4
    clock.now += DAY
    assert ledger.add(["1"]) == 1
    assert ledger.billable_today() == 1
    assert ledger.billed_on(date(2026, 12, 3)) == 4
    assert ledger.billed_in_cycle() == 5


def test_a_restart_reads_the_day_back_and_a_torn_tail_is_cut(tmp_path: Path) -> None:
    clock = Clock()
    ledger = BillingLedger(tmp_path, clock=clock)
    ledger.add(range(1, 101))
    ledger.close()
    with open(tmp_path / "2026-12-03.u64", "ab") as handle:
        handle.write(b"\x01\x02\x03")  # a write cut by a power loss
    again = BillingLedger(tmp_path, clock=clock)
    assert again.billable_today() == 100
    assert again.add([100, 101]) == 1
    assert (tmp_path / "2026-12-03.u64").stat().st_size == 101 * 8


def test_ids_no_uint64_holds_are_not_counted_and_say_how_many(tmp_path: Path) -> None:
    ledger = BillingLedger(tmp_path, clock=Clock())
    assert ledger.add([1, 2]) == 2
    too_big = "99999999999999999999999"
    assert ledger.add([too_big, "3", "abc", -1, 2**64 - 1]) == 2
    assert ledger.add_lines([b'{"data":{"id":"' + too_big.encode() + b'","text":"x"}}']) == 0
    assert ledger.add_lines([b'{"data":{"id":"12a","text":"x"}}']) == 0
    figures = ledger.figures()
    assert figures["billable_posts_today"] == 4 and figures["uncountable_post_ids"] == 5
    ledger.close()
    assert BillingLedger(tmp_path, clock=Clock()).billable_today() == 4


def test_ids_survive_a_merge_of_the_recent_set(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("collector.telemetry.ledger.MERGE_AT", 10)
    ledger = BillingLedger(tmp_path, clock=Clock())
    for start in range(0, 100, 7):
        ledger.add(range(start, start + 7))
    assert ledger.billable_today() == 105
    assert ledger.add(range(0, 110)) == 5


def test_the_post_id_is_the_posts_own_not_a_nested_one() -> None:
    nested_first = {
        "data": {
            "context_annotations": [{"domain": {"id": "45"}, "entity": {"id": "78"}}],
            "text": 'a "quoted" {brace] text with "id":"9"',
            "referenced_tweets": [{"type": "quoted", "id": "1377640162566496258"}],
            "id": "1377650090978992134",
        },
        "includes": {"users": [{"id": "4602771083"}]},
    }
    line = json.dumps(nested_first, separators=(",", ":")).encode()
    assert post_id_of(line) == 1377650090978992134
    assert post_id_of(b'{"data":{"id":"42","text":"x"}}') == 42
    assert post_id_of(b'{"data":{"text":"no id"}}') is None


def test_the_stand_ins_sample_lines_give_their_ids() -> None:
    samples = Path(__file__).resolve().parents[1] / "fakes" / "data" / "x_v2_filtered_stream.jsonl"
    for line in samples.read_bytes().splitlines():
        if line.strip():
            assert post_id_of(line) == int(json.loads(line)["data"]["id"])


def test_posts_per_day_is_exhausted_with_the_reason_and_renews_at_midnight(tmp_path: Path):
    clock = Clock()
    seen = []
    ledger = BillingLedger(tmp_path, BudgetConfig(posts_per_day=1000), clock)
    ledger.on_exhausted = seen.append
    ledger.add(range(999))
    assert ledger.remaining_today() == 1 and not seen
    ledger.add([999, 1000])
    assert len(seen) == 1
    assert seen[0].reason == (
        "budget reached: 1,001 posts today (posts_per_day 1,000); paused until 00:00 UTC"
    )
    assert seen[0].until == datetime(2026, 12, 4, tzinfo=UTC)
    assert ledger.remaining_today() == 0
    clock.now += DAY
    assert ledger.exhausted() is None and ledger.remaining_today() == 1000


def test_a_repair_beside_the_running_collector_counts_in_its_ledger_and_budget(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("collector.telemetry.ledger.ABSORB_SECONDS", 0.0)
    clock, seen = Clock(), []
    running = BillingLedger(tmp_path, BudgetConfig(posts_per_day=1000), clock)
    running.on_exhausted = seen.append
    running.add(range(600))
    repair = BillingLedger(tmp_path, BudgetConfig(posts_per_day=1000), clock, writer="repair-7")
    assert repair.billable_today() == 600  # it reads the running collector's file
    assert repair.add(range(500, 900)) == 300  # 500-599 were billed today already
    assert (tmp_path / "2026-12-03.repair-7.u64").stat().st_size == 300 * 8
    assert (tmp_path / "2026-12-03.u64").stat().st_size == 600 * 8  # one writer a file
    assert running.billable_today() == 900 and not seen
    assert running.add([899, 900, 901]) == 2  # 899 came from the repair: not billed again
    assert running.figures()["billable_posts_today"] == 902
    running.add(range(902, 1000))
    assert [e.reason for e in seen] == [
        "budget reached: 1,000 posts today (posts_per_day 1,000); paused until 00:00 UTC"
    ]
    assert repair.exhausted() is not None  # the repair sees the collector's posts too
    running.close()
    repair.close()
    assert BillingLedger(tmp_path, clock=clock).billable_today() == 1000  # a restart
    assert billed_days(tmp_path) == {date(2026, 12, 3): 1000}  # what `collector usage` reads
    clock.now += DAY
    again = BillingLedger(tmp_path, clock=clock)
    assert again.billed_on(date(2026, 12, 3)) == 1000 and again.billed_in_cycle() == 1000


def test_a_ledger_writer_name_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ledger writer '../x'"):
        BillingLedger(tmp_path, writer="../x")


def test_usd_per_month_holds_until_the_next_billing_cycle(tmp_path: Path) -> None:
    clock = Clock()
    budget = BudgetConfig(usd_per_month=1.0, billing_cycle_day=4)
    ledger = BillingLedger(tmp_path, budget, clock)
    ledger.add(range(200))  # 200 x $0.005 = $1.00
    exhausted = ledger.exhausted()
    assert exhausted is not None and exhausted.until == datetime(2026, 12, 4, tzinfo=UTC)
    assert "$1.00 this billing cycle, 200 posts (usd_per_month $1.00)" in exhausted.reason
    clock.now += DAY  # 2026-12-04: a new cycle
    assert ledger.exhausted() is None
    figures = ledger.figures()
    assert figures["spend_usd_cycle"] == 0 and figures["billing_cycle_start"] == "2026-12-04"


def test_figures_forecast_the_cycle_at_the_last_hours_rate(tmp_path: Path) -> None:
    start = datetime(2026, 12, 30, 0, tzinfo=UTC).timestamp()
    clock = Clock(start)
    ledger = BillingLedger(tmp_path, BudgetConfig(), clock)
    for minute in range(60):  # one post a second over the last hour
        clock.now = start + minute * 60 + 30
        ledger.add(range(minute * 60, minute * 60 + 60))
    clock.now = start + 3600
    figures = ledger.figures()
    assert figures["billable_posts_today"] == 3600
    assert figures["spend_usd_today"] == pytest.approx(18.0)
    # 2026-12-30 01:00 to 2027-01-01 00:00: 47 hours more at 3,600 posts an hour
    assert figures["spend_usd_cycle_forecast"] == pytest.approx((3600 + 47 * 3600) * 0.005)
    assert figures["monthly_cap_reached_on"] is None and figures["spend_forecast_note"] is None
    assert figures["budget"]["usd_per_post"] == 0.005


def test_the_forecast_waits_for_ten_minutes_of_rate_then_holds_steady(tmp_path: Path) -> None:
    start = datetime(2026, 12, 3, 12, 0, 5, tzinfo=UTC).timestamp()
    clock = Clock(start)
    ledger = BillingLedger(tmp_path, BudgetConfig(), clock)
    forecasts, next_id = [], 0
    for second in range(1, 3 * 3600 + 1):  # 5 posts a second for three hours
        clock.now = start + second
        ledger.add(range(next_id, next_id + 5))
        next_id += 5
        if second in (10, 599):
            figures = ledger.figures()
            assert figures["spend_usd_cycle_forecast"] is None
            assert figures["spend_forecast_note"] == (
                "no forecast yet: the rate is measured for 10 minutes first (until 12:10 UTC)"
            )
            assert forecast_text(figures) == figures["spend_forecast_note"]
        if second % 900 == 0:
            forecasts.append(ledger.figures()["spend_usd_cycle_forecast"])
    # 5 posts/s is 432,000 a day: X's cap of 3,000,000 is reached within the cycle, on the
    # 10th (3M - the posts so far, at 432,000 a day from 2026-12-03 12:00 on)
    assert forecasts == [15_000.0] * 12
    figures = ledger.figures()
    assert figures["monthly_cap_reached_on"] == "2026-12-10"
    assert forecast_text(figures) == (
        "forecast $15,000.00 at its end: X's monthly cap reached on 2026-12-10"
    )


def test_a_forecast_under_the_cap_does_not_swing_with_the_first_minutes(tmp_path: Path) -> None:
    start = datetime(2026, 12, 31, 0, 0, 5, tzinfo=UTC).timestamp()
    clock = Clock(start)
    ledger = BillingLedger(tmp_path, BudgetConfig(), clock)
    forecasts = []
    for second in range(1, 3600 + 1):  # 5 posts a second for an hour on the cycle's last day
        clock.now = start + second
        ledger.add(range(second * 5, second * 5 + 5))
        if second >= 600 and second % 300 == 0:
            figures = ledger.figures()
            expected = (second * 5 + 5 * (86400 - 5 - second)) * 0.005  # to 2027-01-01 00:00
            forecasts.append(figures["spend_usd_cycle_forecast"] / expected)
    assert min(forecasts) > 0.99 and max(forecasts) < 1.01, forecasts


@pytest.mark.parametrize(
    ("day", "cycle_day", "start", "following"),
    [
        (date(2026, 12, 3), 1, date(2026, 12, 1), date(2027, 1, 1)),
        (date(2026, 12, 3), 15, date(2026, 11, 15), date(2026, 12, 15)),
        (date(2027, 2, 28), 31, date(2027, 2, 28), date(2027, 3, 31)),
        (date(2027, 3, 30), 31, date(2027, 2, 28), date(2027, 3, 31)),
        (date(2027, 1, 10), 31, date(2026, 12, 31), date(2027, 1, 31)),
    ],
)
def test_billing_cycles(day: date, cycle_day: int, start: date, following: date) -> None:
    assert cycle_start(day, cycle_day) == start
    assert next_cycle_start(day, cycle_day) == following


def test_days_before_the_previous_cycle_are_deleted(tmp_path: Path) -> None:
    (tmp_path / "2026-10-05.u64").write_bytes(b"\0" * 16)
    (tmp_path / "2026-11-05.u64").write_bytes(b"\0" * 16)
    BillingLedger(tmp_path, clock=Clock())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2026-11-05.u64", "2026-12-03.u64"]
