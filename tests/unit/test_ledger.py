"""The billing ledger: unique post ids per UTC day as X bills them, kept across restarts."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from collector.config import BudgetConfig
from collector.telemetry.ledger import (
    BillingLedger,
    cycle_start,
    next_cycle_start,
    post_id_of,
)

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
    clock = Clock(datetime(2026, 12, 30, 0, tzinfo=UTC).timestamp())
    ledger = BillingLedger(tmp_path, BudgetConfig(), clock)
    clock.now += 3600
    ledger.add(range(3600))  # one post a second over the last hour
    figures = ledger.figures()
    assert figures["billable_posts_today"] == 3600
    assert figures["spend_usd_today"] == pytest.approx(18.0)
    # 2026-12-30 01:00 to 2027-01-01 00:00: 47 hours more at 3,600 posts an hour
    assert figures["spend_usd_cycle_forecast"] == pytest.approx((3600 + 47 * 3600) * 0.005)
    assert figures["budget"]["usd_per_post"] == 0.005


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
