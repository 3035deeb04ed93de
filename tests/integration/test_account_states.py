"""X's account states as the collector lives with them: 402 credits, the spending limit, the
monthly cap, stale connections (TooManyConnections), and X's api-version in status and events.

The stream reader runs in this process against the stand-in with the retry intervals shortened
(XStream.account_retry), so no test waits minutes; the collector process tests check what an
operator sees (`collector status`, exit codes, the connected event in S3)."""

from __future__ import annotations

import json
import logging
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.config import load_config
from collector.source.account import ACCOUNT_STATES, account_state
from collector.source.stream import open_stream, start_stream
from collector.telemetry.events import read_events
from collector.telemetry.health import FAILING, HEALTHY, Health
from collector.telemetry.metrics import CONNECTION, POSTS_RECEIVED, Metrics
from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    run_cli,
    s3_objects,
    wait_until,
    write_config,
    x_server_fixture,
)
from tests.fakes.x_server import NAMED_PROBLEMS, FakeXServer

x_server = x_server_fixture(keepalive_interval=0.5, rate=50)


class Reader:
    """The stream reader (XStream) of a config, in this process."""

    def __init__(self, tmp_path: Path, server: FakeXServer, **retry: float) -> None:
        self.cfg = load_config(write_config(tmp_path, server.url))
        server.add_rule("python lang:en", tag="test-1:python")
        self.lines: list = []
        self.health = Health()
        self.stream = open_stream(self.cfg, TOKEN, self.lines.append, Metrics(), self.health)
        self.stream.account_retry.update(retry)

    def __enter__(self) -> Reader:
        self.thread = start_stream(self.cfg, self.stream)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stream.disconnect()
        self.thread.join(5)

    def posts(self) -> int:
        return sum(len(batch) if isinstance(batch, list) else 1 for batch in self.lines)


def gaps(server: FakeXServer) -> list[float]:
    times = server.connection_times
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


@pytest.mark.parametrize("title", ["CreditsDepleted", "Payment Required"])
def test_xs_402_bodies_both_mean_credits_depleted(title: str) -> None:
    state = account_state(402, NAMED_PROBLEMS[title])
    assert state is ACCOUNT_STATES["credits"] and state.retry_seconds == 300
    assert account_state(402, NAMED_PROBLEMS["SpendingLimit"]) is ACCOUNT_STATES["spending-limit"]
    capped = account_state(429, NAMED_PROBLEMS["UsageCapExceeded"])
    assert capped is ACCOUNT_STATES["usage-cap"] and capped.retry_seconds == 3600
    assert account_state(429, NAMED_PROBLEMS["TooManyConnections"]).key == "too-many-connections"
    assert account_state(503, {"title": "Service Unavailable"}) is None


@pytest.mark.parametrize("title", ["CreditsDepleted", "Payment Required"])
def test_credits_depleted_fails_at_once_retries_on_its_interval_and_resumes_by_itself(
    tmp_path: Path, x_server: FakeXServer, title: str
) -> None:
    x_server.refuse_streams(402, title)
    with Reader(tmp_path, x_server, credits=1.5) as reader:
        wait_until(lambda: reader.health.state()[0] == FAILING, 5)
        reason = reader.health.state()[1]
        assert "X credits depleted (pay-per-use balance)" in reason
        assert "add credits or enable auto-recharge in the X Developer Console" in reason
        wait_until(lambda: x_server.connections >= 3, 10)
        assert all(gap >= 1.4 for gap in gaps(x_server)), gaps(x_server)  # no faster retries
        x_server.refuse_streams(None)
        refused_until = time.monotonic()
        wait_until(lambda: reader.posts() >= 5, 10)
        # the next attempt after X accepts: the interval, not tweepy's doubling backoff
        assert time.monotonic() - refused_until < 4
        wait_until(lambda: reader.health.state()[0] == HEALTHY, 15)


def test_the_monthly_cap_names_the_day_it_lifts_and_retries_on_its_interval(
    tmp_path: Path, x_server: FakeXServer, caplog: pytest.LogCaptureFixture
) -> None:
    x_server.control({"usage_cycle_day": 1, "refuse_streams": [429, "UsageCapExceeded"]})
    today = datetime.now(UTC).date()
    lifts = (today.replace(day=28) + timedelta(days=4)).replace(day=1)
    caplog.set_level(logging.INFO)
    with Reader(tmp_path, x_server, **{"usage-cap": 2.0}) as reader:
        wait_until(lambda: reader.health.state()[0] == FAILING, 5)
        reason = reader.health.state()[1]
        assert f"X monthly cap reached; lifts on {lifts.isoformat()}" in reason
        assert "UsageCapExceeded" in reason
        time.sleep(5)
        attempts = x_server.connections
    assert 2 <= attempts <= 4 and all(gap >= 1.9 for gap in gaps(x_server))
    assert x_server.stats()["usage_requests"] == attempts  # cap_reset_day asked once a refusal
    stream_lines = [r for r in caplog.records if r.name.startswith("collector.source")]
    assert len(stream_lines) <= attempts, [r.getMessage() for r in stream_lines]


def test_the_spending_limit_fails_until_the_cycle_lifts(tmp_path, x_server) -> None:
    x_server.refuse_streams(402, "SpendingLimit")
    with Reader(tmp_path, x_server) as reader:
        wait_until(lambda: reader.health.state()[0] == FAILING, 5)
        reason = reader.health.state()[1]
        assert reason.startswith("X spending limit reached for this billing cycle; lifts on ")
        assert "raise the spending limit in the X Developer Console" in reason
        time.sleep(1)
        assert x_server.connections == 1  # the next attempt is an hour away


def test_a_stale_connection_is_ended_through_the_connections_api_and_posts_flow(
    tmp_path: Path, x_server: FakeXServer, caplog: pytest.LogCaptureFixture
) -> None:
    x_server.control({"connection_limit": 1, "stale_connection": 600})
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    with Reader(tmp_path, x_server) as reader:
        wait_until(lambda: reader.posts() >= 5, 15)
        assert time.monotonic() - started < 15
    assert x_server.stats()["connections_deleted"] == 1
    (ended,) = [r.getMessage() for r in caplog.records if r.name == "collector.source.stream"]
    assert ended.startswith(
        "ended 1 stale filtered-stream connection(s) through X's Connections API: "
    )


def test_without_the_connections_api_the_reason_says_so_and_tweepy_backs_off(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    x_server.control({"connection_limit": 1, "stale_connection": 600, "connections_api": 404})
    with Reader(tmp_path, x_server) as reader:
        wait_until(lambda: reader.health.state()[0] == FAILING, 5)
        reason = reader.health.state()[1]
        assert "TooManyConnections" in reason
        assert "X's Connections API is not available to this project" in reason
        assert "HTTP 404" in reason and "nothing to do but wait" in reason
        assert "next attempt in 60 s (tweepy's 429 backoff" in reason
        at = datetime.fromisoformat(reader.stream.metrics.snapshot()["next_attempt_at"][:-1])
        assert 55 <= (at.replace(tzinfo=UTC) - datetime.now(UTC)).total_seconds() <= 61
        assert reader.stream.metrics.snapshot()["x_account_state"] == "too_many_connections"
        time.sleep(2)
        assert x_server.connections == 1  # tweepy's 429 backoff starts at 60 s


@pytest.mark.slow  # tweepy's real 429 backoff (60 s)
def test_without_the_connections_api_posts_flow_after_tweepys_backoff(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    x_server.control({"connection_limit": 1, "stale_connection": 5, "connections_api": 404})
    started = time.monotonic()
    with Reader(tmp_path, x_server) as reader:
        wait_until(lambda: reader.health.state()[0] == FAILING, 5)
        assert "Connections API is not available" in reader.health.state()[1]
        wait_until(lambda: reader.posts() >= 5, 75, 0.5)  # X dropped the stale one meanwhile
    assert 55 <= time.monotonic() - started <= 75
    assert x_server.connections == 2 and x_server.stats()["connections_deleted"] == 0


def test_clear_stale_connections_false_leaves_other_clients_alone(tmp_path, x_server) -> None:
    x_server.control({"connection_limit": 1, "stale_connection": 600})
    reader = Reader(tmp_path, x_server)
    config = write_config(tmp_path, x_server.url)
    text = config.read_text().replace("[x]\n", "[x]\nclear_stale_connections = false\n")
    config.write_text(text)
    reader.stream.cfg = load_config(config)
    with reader:
        wait_until(lambda: reader.health.state()[0] == FAILING, 5)
        assert "x.clear_stale_connections = false" in reader.health.state()[1]
    assert x_server.stats()["connections_deleted"] == 0


# The collector process: what an operator sees ----------------------------------------------


def status_of(config: Path) -> tuple[int, dict]:
    result = run_cli("status", "--json", "--config", str(config))
    return result.returncode, json.loads(result.stdout)


def test_status_exits_1_with_the_credits_reason_within_5_s(tmp_path, x_server, s3) -> None:
    s3.create_bucket(Bucket=BUCKET)
    x_server.refuse_streams(402, "CreditsDepleted")
    config = write_config(tmp_path, x_server.url)
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections >= 1, 20)
        refused_at = time.monotonic()
        code, status = wait_until(
            lambda: (r := status_of(config))[1].get("health") == FAILING and r, 10, 0.2
        )
        assert time.monotonic() - refused_at < 5
        assert code == 1 and "credits" in status["health_reason"]
        assert "auto-recharge" in status["health_reason"]
        assert status["x_api_version"] == "2.168"
    finally:
        assert collector.stop() == 0, collector.log


def test_a_restart_after_kill_9_ends_the_stale_connection_and_records_the_api_version(
    tmp_path, x_server, s3, aws_env
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, s3_endpoint=aws_env.url)
    first = CollectorProcess(config)
    wait_until(lambda: x_server.stats()["sent"] >= 5, 20)
    first.signal(signal.SIGKILL)
    first.wait(10)
    # X still counts the dead connection: one place, held
    x_server.control({"connection_limit": 1, "stale_connection": 600, "api_version": "2.167"})
    sent_before = x_server.stats()["sent"]
    second = CollectorProcess(config)
    started = time.monotonic()
    try:
        wait_until(lambda: x_server.stats()["sent"] >= sent_before + 5, 15)
        assert time.monotonic() - started < 15
        # status.json is rewritten every few seconds: X's version arrives with the answer, the
        # connection shows as connected from the next snapshot on
        wait_until(
            lambda: (
                (s := status_of(config)[1]).get("x_api_version") == "2.167"
                and s.get("connection") == "connected"
            ),
            10,
            0.5,
        )
    finally:
        assert second.stop() == 0, second.log
    assert "ended 1 stale filtered-stream connection(s)" in second.log
    paths = []
    for key, body in s3_objects(s3, events=True).items():
        path = tmp_path / "events" / key.rsplit("/", 1)[1]
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(body)
        paths.append(path)
    events, problems = read_events(paths)
    assert problems == []
    versions = [e.api_version for e in events if e.event == "connected"]
    assert versions[0] == "2.168" and versions[-1] == "2.167"


def test_the_progress_line_is_not_repeated_while_nothing_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from collector.spool.layout import SpoolDirs
    from collector.telemetry.status import StatusReporter

    dirs = SpoolDirs(tmp_path / "spool")
    dirs.create()
    metrics = Metrics()
    metrics.set(CONNECTION, "disconnected")  # X refusing: nothing moves for hours
    reporter = StatusReporter("c1", dirs, metrics, Health())
    caplog.set_level(logging.INFO, logger="collector.telemetry.status")
    for _ in range(3):
        reporter.progress()
    metrics.incr(POSTS_RECEIVED, 5)
    reporter.progress()
    reporter.progress(final=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert len(lines) == 3, lines  # three unchanged calls log once
    assert lines[0].startswith("progress: 0 posts")
    assert all(line.startswith("progress: 5 posts") for line in lines[1:])


# Gap repair after an account refusal -------------------------------------------------------


def test_a_span_x_refused_for_credits_is_not_bought_back_after_the_top_up(
    tmp_path, x_server, s3, aws_env
) -> None:
    """Credits depleted, then topped up (and the collector restarted): the refused span is not
    searched again (that would bill the whole span at once); status, the event and the log
    say so and give the command that repairs it by hand. Status names the state and the next
    attempt while X refuses."""
    s3.create_bucket(Bucket=BUCKET)
    x_server.refuse_streams(402, "CreditsDepleted")
    config = write_config(
        tmp_path, x_server.url, s3_endpoint=aws_env.url, x_extra="repair_margin_seconds = 1"
    )
    first = CollectorProcess(config)
    try:
        status = wait_until(
            lambda: (s := status_of(config)[1]).get("x_account_state") == "credits_depleted" and s,
            10,
            0.2,
        )
        next_at = datetime.fromisoformat(status["next_attempt_at"].replace("Z", "+00:00"))
        assert 290 <= (next_at - datetime.now(UTC)).total_seconds() <= 301
    finally:
        assert first.stop() == 0, first.log
    x_server.refuse_streams(None)  # topped up
    second = CollectorProcess(config)
    try:
        status = wait_until(
            lambda: "not repaired" in ((s := status_of(config)[1]).get("repair_last") or "") and s,
            20,
            0.3,
        )
        assert status["x_account_state"] is None and status["next_attempt_at"] is None
    finally:
        assert second.stop() == 0, second.log
    assert (
        "not repaired: X refused for credits_depleted; repair by hand with `collector "
        in (status["repair_last"])
    )
    assert "`collector repair --from " in status["repair_last"]
    assert x_server.stats()["search_requests"] == 0
    assert status["repair_posts_fetched"] == 0
    events = []
    for key, body in s3_objects(s3, events=True).items():
        path = tmp_path / "events" / key.rsplit("/", 1)[1]
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(body)
        events.append(path)
    (failed,) = [e for e in read_events(events)[0] if e.event == "repair_failed"]
    assert failed.cause.startswith("X refused for credits_depleted; repair by hand with ")
    assert failed.detail["method"] == "none" and failed.detail["posts"] == 0
    from collector.analysis import loader, report

    gap = report.Gap(
        loader.parse_time(failed.detail["from"]),
        loader.parse_time(failed.detail["to"]),
        report.NOT_COLLECTING,
    )
    assert report.repair_state(gap, [failed]).startswith(
        "not repaired (X refused for credits_depleted; repair by hand with `collector repair "
    )


def test_only_refusals_for_money_leave_the_span_to_a_repair_by_hand() -> None:
    by_hand = {s.name for s in ACCOUNT_STATES.values() if not s.repaired_automatically}
    assert by_hand == {"credits_depleted", "spending_limit", "monthly_cap"}


def test_a_cleared_stale_connection_is_degraded_not_failing_and_says_what_the_docs_say(
    tmp_path: Path, x_server: FakeXServer, caplog: pytest.LogCaptureFixture
) -> None:
    x_server.control({"connection_limit": 1, "stale_connection": 600})
    caplog.set_level(logging.INFO)
    seen: list[tuple[str, str | None]] = []
    with Reader(tmp_path, x_server) as reader:
        wait_until(lambda: seen.append(reader.health.state()) or reader.posts() >= 5, 15, 0.05)
    states = {state for state, _ in seen}
    assert FAILING not in states, seen
    reasons = {reason for _, reason in seen if reason}
    assert any(
        r.startswith(
            "X refused the connection (TooManyConnections): ended 1 stale connection(s) "
            "through X's Connections API"
        )
        for r in reasons
    ), reasons
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    docs = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    assert "X refused the connection (TooManyConnections): ended 1 stale connection(s)" in docs


def test_tweepys_copy_of_xs_answer_is_not_logged(
    tmp_path: Path, x_server: FakeXServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One line per refusal: the collector's, not also tweepy's `HTTP error response text`."""
    x_server.control({"connection_limit": 1, "stale_connection": 600, "connections_api": 404})
    caplog.set_level(logging.INFO)
    with Reader(tmp_path, x_server) as reader:
        wait_until(lambda: reader.health.state()[0] == FAILING, 5)
        time.sleep(0.5)
    assert not [r for r in caplog.records if r.name.startswith("tweepy")]
    refusals = [r for r in caplog.records if "stream refused" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]


def test_check_asks_x_for_the_cap_and_the_balance_and_fails_when_x_would_refuse(
    tmp_path, x_server, s3, aws_env
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, s3_endpoint=aws_env.url)
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    X monthly cap: 0 of 3,000,000 posts used this billing cycle" in result.stdout
    assert "ok    X credits: balance $25.0" in result.stdout
    x_server.control(
        {"usage_cap": 10, "usage_credits": {"total_balance": -0.02, "prepaid_balance": -0.02}}
    )
    x_server.record_delivered([str(n) for n in range(10)])
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    (cap,) = [line for line in lines if line.startswith("FAIL  X monthly cap: ")]
    assert cap.startswith("FAIL  X monthly cap: X monthly cap reached (10 of 10 posts this")
    assert "refuses the stream with 429 UsageCapExceeded" in cap
    (balance,) = [line for line in lines if line.startswith("FAIL  X credits: ")]
    assert "X credits depleted (pay-per-use balance): balance $-0.02" in balance
    assert "add credits or enable auto-recharge" in balance
    x_server.control({"usage_credits": None})
    result = run_cli("check", "--config", str(config))
    assert "WARN  X credits: X does not show this project's balance" in result.stdout


def test_while_capped_status_shows_xs_count_and_no_forecast(tmp_path, x_server, s3) -> None:
    """No `monthly_cap_used_percent 0.0` beside `monthly cap reached`, no forecast as if
    collecting while X refuses."""
    s3.create_bucket(Bucket=BUCKET)
    x_server.control({"usage_cap": 40, "refuse_streams": [429, "UsageCapExceeded"]})
    x_server.record_delivered([str(n) for n in range(40)])  # another app of the project
    config = write_config(tmp_path, x_server.url)
    collector = CollectorProcess(config)
    try:
        status = wait_until(
            lambda: (s := status_of(config)[1]).get("x_account_state") == "monthly_cap" and s,
            15,
            0.2,
        )
        text = run_cli("status", "--config", str(config)).stdout
    finally:
        assert collector.stop() == 0, collector.log
    assert status["monthly_cap_used_percent"] == 100.0
    assert (status["x_project_usage"], status["x_project_cap"]) == (40, 40)  # X's own count
    assert status["spend_usd_cycle_forecast"] is None
    assert status["spend_forecast_note"].startswith("no forecast: X refuses the stream (monthly")
    assert "this billing cycle (since " in text and "), no forecast: X refuses the stream" in text


def test_the_documented_account_state_switches_make_the_stand_in_answer_as_x(
    x_server: FakeXServer,
) -> None:
    """Every `curl ... /_fake/control -d '{...}'` line of docs/collector.md's account-state
    list is a setting the stand-in knows, and the stream answers it as X does."""
    import re

    import requests

    docs = (Path(__file__).parents[2] / "docs" / "collector.md").read_text()
    section = docs.split("X's account states ([X's account states]")[1].split("```\n\n")[0]
    bodies = [json.loads(b) for b in re.findall(r"_fake/control -d '(\{.*\})'", section)]
    assert len(bodies) == 7
    x_server.add_rule("python lang:en", tag="test-1:python")
    answers = []
    for body in bodies:
        x_server.control({"refuse_streams": None, "connection_limit": None, "stale_connection": 0})
        x_server.control(body)
        response = requests.get(
            f"{x_server.url}/2/tweets/search/stream",
            headers={"Authorization": f"Bearer {TOKEN}"},
            stream=True,
            timeout=5,
        )
        problem = response.json() if response.status_code >= 400 else {}
        answers.append((response.status_code, account_state(response.status_code, problem)))
        response.close()
    names = [(status, state.name if state else None) for status, state in answers]
    assert names[:5] == [
        (402, "credits_depleted"),
        (402, "spending_limit"),
        (429, "monthly_cap"),
        (200, None),
        (429, "too_many_connections"),
    ]


def test_another_refusal_says_when_the_next_attempt_is(tmp_path, x_server) -> None:
    x_server.refuse_streams(503)
    with Reader(tmp_path, x_server) as reader:
        snapshot = wait_until(
            lambda: (m := reader.stream.metrics.snapshot()).get("next_attempt_at") and m, 5
        )
        assert snapshot["x_account_state"] is None
        at = datetime.fromisoformat(snapshot["next_attempt_at"].replace("Z", "+00:00"))
        assert 3 <= (at - datetime.now(UTC)).total_seconds() <= 6  # tweepy's first wait: 5 s
        reason = reader.health.reason_of("stream")
        assert reason.startswith("X refuses the stream: HTTP 503")
        assert reason.endswith("; next attempt in 5 s (tweepy's backoff)")
