"""Spend under control: the ledger equals X's bill post for post, the budget pauses the stream
and the next UTC day reopens it (a movable clock: no test waits for midnight)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from tests.clocked import OffsetClock, seconds_to_midnight
from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    run_cli,
    s3_post_ids,
    wait_until,
    write_config,
)
from tests.fakes.x_server import FakeXServer
from tests.integration.test_gaps import shipped_events


@pytest.fixture
def clock(tmp_path: Path) -> OffsetClock:
    clock = OffsetClock(tmp_path / "clock-offset")
    clock.set(0)
    return clock


@pytest.fixture
def x_server(clock: OffsetClock) -> Iterator[FakeXServer]:
    server = FakeXServer(token=TOKEN, keepalive_interval=1.0, count=0)
    server.clock = clock  # the bill's UTC day moves with the collector's
    server.start()
    yield server
    server.stop()


def status_of(config: Path) -> tuple[int, dict]:
    result = run_cli("status", "--json", "--config", str(config))
    return result.returncode, json.loads(result.stdout)


def ledger_ids(config: Path, day: str) -> set[str]:
    path = config.parent / "spool" / "ledger" / f"{day}.u64"
    return {str(i) for i in np.fromfile(path, dtype="<u8")} if path.exists() else set()


def utc_day(clock: OffsetClock) -> str:
    return datetime.fromtimestamp(clock(), UTC).strftime("%Y-%m-%d")


def test_the_ledger_after_a_restart_and_a_day_change_equals_xs_bill(
    tmp_path: Path, x_server: FakeXServer, clock: OffsetClock, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, max_seconds=0.5)
    first_day = utc_day(clock)
    collector = CollectorProcess(config, clock_file=clock.path)
    try:
        x_server.count = 300
        wait_until(lambda: len(ledger_ids(config, first_day)) == 300, 30)
    finally:
        assert collector.stop() == 0
    collector = CollectorProcess(config, clock_file=clock.path)  # a restart: the day goes on
    try:
        # the first process's connection is over on the stand-in's side too (else its handler
        # could take the next posts and write them to a closed socket)
        wait_until(lambda: x_server.connections == 2 and x_server.streams_open == 1, 20)
        x_server.count = 500
        wait_until(lambda: status_of(config)[1].get("billable_posts_today") == 500, 30, 0.5)
        clock.set(seconds_to_midnight(clock) + 60)  # one minute into the next UTC day
        second_day = utc_day(clock)
        x_server.count = 700
        wait_until(lambda: len(ledger_ids(config, second_day)) == 200, 30)
        code, status = wait_until(
            lambda: (r := status_of(config))[1].get("billable_posts_today") == 200 and r, 30, 0.5
        )
    finally:
        assert collector.stop() == 0
    assert set(x_server.billed) == {first_day, second_day}
    for day, ids in x_server.billed.items():
        assert ledger_ids(config, day) == ids, day
    assert status["billable_posts_cycle"] in (200, 700)  # a new month starts a new cycle
    assert status["spend_usd_today"] == pytest.approx(1.0)  # 200 posts at $0.005


def test_posts_per_day_pauses_the_stream_and_the_next_utc_day_resumes_it(
    tmp_path: Path, x_server: FakeXServer, clock: OffsetClock, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(
        tmp_path, x_server.url, max_seconds=0.5, extra="[budget]\nposts_per_day = 1000\n"
    )
    x_server.rate, x_server.count = 100, None
    day = utc_day(clock)
    collector = CollectorProcess(config, clock_file=clock.path)
    try:
        code, status = wait_until(
            lambda: (r := status_of(config))[1].get("connection") == "paused" and r, 40, 0.5
        )
        billed = x_server.billed_posts(day)
        assert 1000 <= billed <= 1100  # at most one second of posts over, at 100 posts/s
        code, status = wait_until(lambda: (r := status_of(config))[0] == 1 and r, 10, 0.5)
        # X bills what it wrote before it saw the close; posts still in the socket when the
        # collector closed it never reached the collector (at most a few at 100 posts/s)
        counted = status["billable_posts_today"]
        assert 1000 <= counted <= billed and status["health"] == "degraded"
        assert ledger_ids(config, day) <= x_server.billed[day]
        assert len(ledger_ids(config, day)) == counted
        assert status["health_reason"] == (
            f"budget reached: {counted:,} posts today (posts_per_day 1,000); paused until 00:00 UTC"
        )
        connections = x_server.connections
        wait_until(lambda: x_server.streams_open == 0, 10)
        # no connection while paused, and nothing more billed
        with pytest.raises(AssertionError):
            wait_until(lambda: x_server.connections > connections, 3)
        assert x_server.billed_posts(day) == billed
        human = run_cli("status", "--config", str(config))
        assert human.returncode == 1 and "budget reached: " in human.stdout
        assert f"\nspend: {counted:,} billable posts today (${counted * 0.005:,.2f}); " in (
            human.stdout
        )
        assert "budget posts_per_day 1,000 (0 posts left today)" in human.stdout
        assert "  budget.posts_per_day" in human.stdout and "  connection " in human.stdout

        # a restart while the budget is spent stays paused: the ledger kept the day's count
        assert collector.stop() == 0
        collector = CollectorProcess(config, clock_file=clock.path)
        code, status = wait_until(
            lambda: (r := status_of(config))[1].get("state") == "running" and r, 20, 0.5
        )
        assert status["connection"] == "paused" and code == 1
        assert status["billable_posts_today"] == counted
        with pytest.raises(AssertionError):
            wait_until(lambda: x_server.connections > connections, 2)

        clock.set(seconds_to_midnight(clock) + 1)  # the next UTC day
        next_day = utc_day(clock)
        wait_until(lambda: x_server.connections == connections + 1, 10)
        code, status = wait_until(
            lambda: (r := status_of(config))[0] == 0 and r[1]["connection"] == "connected" and r,
            20,
            0.5,
        )
        wait_until(lambda: x_server.billed_posts(next_day) >= 50, 10)
    finally:
        assert collector.stop() == 0
    assert ledger_ids(config, next_day) <= x_server.billed[next_day]
    events = [e for e in shipped_events(s3, tmp_path / "events") if e.event == "budget_paused"]
    assert len(events) == 2  # at the budget, and again at the restart
    assert events[0].cause.startswith("1,0") and "posts today (posts_per_day 1,000), $5." in (
        events[0].cause
    )


def test_on_exhausted_continue_only_meters_and_warns(
    tmp_path: Path, x_server: FakeXServer, clock: OffsetClock, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    budget = '[budget]\nposts_per_day = 100\non_exhausted = "continue"\n'
    config = write_config(tmp_path, x_server.url, max_seconds=0.5, extra=budget)
    collector = CollectorProcess(config, clock_file=clock.path)
    try:
        x_server.count = 300
        code, status = wait_until(
            lambda: (r := status_of(config))[1].get("billable_posts_today") == 300 and r, 30, 0.5
        )
        assert code == 0 and status["connection"] == "connected"
        assert status["budget"]["remaining_posts_today"] == 0
        assert x_server.connections == 1
    finally:
        assert collector.stop() == 0
    assert "posts today (posts_per_day 100)" in collector.log
    # 200 posts over the budget: one warning at the crossing, not one per post
    assert collector.log.count("collecting on (budget.on_exhausted = continue)") == 1


def test_a_post_id_no_uint64_holds_is_stored_and_shown_uncountable(
    tmp_path: Path, x_server: FakeXServer, clock: OffsetClock, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, max_seconds=0.5)
    collector = CollectorProcess(config, clock_file=clock.path)
    try:
        wait_until(lambda: x_server.streams_open == 1, 20)
        x_server.inject("overflow_id")
        x_server.count = 5
        code, status = wait_until(
            lambda: (r := status_of(config))[1].get("billable_posts_today") == 5 and r, 30, 0.5
        )
        assert code == 0 and status["uncountable_post_ids"] == 1
        assert status["connection"] == "connected" and collector.process.poll() is None
    finally:
        assert collector.stop() == 0
    assert "99999999999999999999999" in s3_post_ids(s3)
    assert len(s3_post_ids(s3)) == 6
    assert "OverflowError" not in collector.log


def repair_state(config: Path) -> dict:
    return json.loads((config.parent / "spool" / "repair.json").read_text())


def test_a_budget_pause_is_not_repaired_after_the_resume_nor_after_a_restart(
    tmp_path: Path, x_server: FakeXServer, clock: OffsetClock, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    small = "[budget]\nposts_per_day = 100\n"
    config = write_config(
        tmp_path, x_server.url, max_seconds=0.5, extra=small, x_extra="repair_margin_seconds = 0"
    )
    x_server.rate, x_server.count = 100, None
    collector = CollectorProcess(config, clock_file=clock.path)
    try:
        wait_until(lambda: status_of(config)[1].get("connection") == "paused", 40, 0.5)
        wait_until(lambda: x_server.streams_open == 0, 10)
        code, status = status_of(config)
        assert code == 1 and "repair_open" not in status  # a pause is not a gap
        assert repair_state(config)["pending"] == []
        first_pause_until = repair_state(config)["paused_until"]

        clock.set(seconds_to_midnight(clock) + 1)  # 00:00 UTC renews the budget: a resume
        wait_until(lambda: x_server.connections == 2, 10)
        next_day = utc_day(clock)
        # the second day's 100 posts take a second: the stream pauses again
        code, status = wait_until(
            lambda: (
                len(ledger_ids(config, next_day)) >= 100
                and repair_state(config)["paused_until"] not in (None, first_pause_until)
                and (r := status_of(config))[1].get("connection") == "paused"
                and r
            ),
            20,
            0.5,
        )
        assert "repair_open" not in status and repair_state(config)["pending"] == []
    finally:
        assert collector.stop() == 0
    stopped = run_cli("status", "--config", str(config)).stdout
    assert "stopped while the budget paused the stream until " in stopped, stopped

    # a bigger budget and a restart: the collector connects, and buys nothing back
    config.write_text(config.read_text().replace(small, "[budget]\nposts_per_day = 100000\n"))
    collector = CollectorProcess(config, clock_file=clock.path)
    try:
        code, status = wait_until(
            lambda: (r := status_of(config))[1].get("connection") == "connected" and r, 20, 0.5
        )
        wait_until(lambda: status_of(config)[1].get("billable_posts_today", 0) > 300, 20, 0.5)
        code, status = status_of(config)
        assert "repair_open" not in status, (status["repair_open"], repair_state(config))
        assert repair_state(config)["pending"] == []
        assert status.get("repair_pending", 0) == 0
    finally:
        assert collector.stop() == 0
    assert x_server.stats()["search_requests"] == 0
    assert "fetched again" not in collector.log
