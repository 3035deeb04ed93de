"""Never silent: every state in which nothing is collected or shipped is refused at start or
shown in `collector status` (health + reason in X's or S3's own words), in the log and in
status.json. One test per such state, named for what the user sees.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.telemetry.health import DEGRADED, FAILING, HEALTHY, Health
from collector.telemetry.lograte import RepeatedWarnings
from tests.collector_support import (
    BUCKET,
    REPO,
    TOKEN,
    CollectorProcess,
    run_cli,
    s3_post_ids,
    wait_until,
    write_config,
    x_server_fixture,
)
from tests.fakes.x_server import FakeXServer

# 1,080 characters: over X's 1,024 on pay-per-use (the stand-in's level), within the 2,048 of the
# enterprise level the configs below claim, so X, not the collector's own check, refuses it
LONG_RULE = "(python OR rust OR golang) " * 40
# an operator X does not know: X refuses the rule when it is added, the collector has no own check
UNKNOWN_OPERATOR_RULE = "golang madeup:operator"


def claiming_enterprise(config: Path) -> Path:
    config.write_text(config.read_text().replace("[x]\n", '[x]\naccess_level = "enterprise"\n'))
    return config


x_server = x_server_fixture(keepalive_interval=1.0, count=0)


def status_of(config: Path) -> tuple[int, dict]:
    result = run_cli("status", "--json", "--config", str(config))
    return result.returncode, json.loads(result.stdout)


def wait_for_health(config: Path, health: str, timeout: float = 60) -> tuple[int, dict]:
    def reached() -> tuple[int, dict] | None:
        code, status = status_of(config)
        return (code, status) if status.get("health") == health else None

    return wait_until(reached, timeout, 0.5)


# 1. A filter config whose only rule X refuses -----------------------------------------------


def test_a_refused_only_rule_exits_78_with_xs_reason(tmp_path: Path, x_server, s3) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = claiming_enterprise(write_config(tmp_path, x_server.url, rules=[(LONG_RULE, "langs")]))

    check = run_cli("check", "--config", str(config))
    assert check.returncode == 1, check.stdout
    (refused,) = [line for line in check.stdout.splitlines() if line.startswith("FAIL  X rule")]
    assert "x.rules" in refused and "(tag test-1:langs)" in refused
    assert "UnprocessableEntity" in refused and "1024" in refused
    assert x_server.rules == {}  # a dry run changes nothing

    collector = CollectorProcess(config)
    assert collector.wait(40) == 78, collector.log
    assert "X refused every configured rule" in collector.log
    assert "x.rules" in collector.log and "UnprocessableEntity" in collector.log
    assert x_server.connections == 0  # no 409 loop: it never connected

    code, status = status_of(config)  # what an operator sees once supervisor shows EXITED
    assert code == 3 and status["state"] == "exited" and status["exit_code"] == 78
    assert status["health"] == FAILING and "UnprocessableEntity" in status["health_reason"]
    assert status["verdict"].startswith("not running: exited with code 78 at ")
    assert "X refused every configured rule" in status["verdict"]


def test_one_refused_rule_streams_the_others_and_shows_degraded(
    tmp_path: Path, x_server, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    rules = [("python lang:en", "python"), (UNKNOWN_OPERATOR_RULE, "langs")]
    config = write_config(tmp_path, x_server.url, rules=rules, max_seconds=0.5)
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        x_server.count = 20
        code, status = wait_for_health(config, "degraded", 30)
        assert code == 1
        assert "X refused 1 rule(s)" in status["health_reason"]
        assert "x.rules" in status["health_reason"]
        assert "UnprocessableEntity" in status["health_reason"]
        wait_until(lambda: len(s3_post_ids(s3)) == 20, 30, 0.5)  # the other rule collects
        # a rules-only deploy drops the bad rule with `rules sync` (no restart): health recovers
        write_config(tmp_path, x_server.url, rules=rules[:1], max_seconds=0.5)
        assert run_cli("rules", "sync", "--config", str(config)).returncode == 0
        wait_for_health(config, "healthy", 60)
    finally:
        assert collector.stop() == 0, collector.log
    assert "ERROR collector.source.rules: X refused rule" in collector.log


# 2. A filter config with no rule at all; X answering 409 ------------------------------------


def test_a_filter_config_without_rules_exits_78_naming_x_rules(tmp_path: Path, x_server) -> None:
    config = write_config(tmp_path, x_server.url, rules=[])
    collector = CollectorProcess(config)
    assert collector.wait(30) == 78
    assert "'x.rules' is empty" in collector.log and "409" in collector.log
    assert x_server.connections == 0


def test_x_answering_409_exits_78_with_xs_reason(tmp_path: Path, x_server, s3) -> None:
    s3.create_bucket(Bucket=BUCKET)
    collector = CollectorProcess(write_config(tmp_path, x_server.url))
    wait_until(lambda: x_server.connections == 1, 20)
    x_server.rules.clear()  # someone deleted every rule of the app
    x_server.operational_disconnect()
    assert collector.wait(60) == 78, collector.log
    assert "RuleConfigurationIssue" in collector.log
    assert "You must define rules" in collector.log
    # the last snapshot of the healthy run does not stay the last word
    code, status = status_of(collector.config)
    assert code == 3 and status["state"] == "exited" and status["health"] == FAILING
    assert "RuleConfigurationIssue" in status["health_reason"]
    assert "RuleConfigurationIssue" in status["verdict"]


def test_an_empty_token_file_exits_78_and_status_names_the_file(tmp_path: Path, x_server) -> None:
    config = write_config(tmp_path, x_server.url)
    (tmp_path / "x_bearer_token").write_text("")
    collector = CollectorProcess(config)
    assert collector.wait(30) == 78
    reason = f"bearer token file {tmp_path / 'x_bearer_token'} is empty (x.bearer_token_file"
    assert reason in collector.log
    code, status = status_of(config)
    assert code == 3 and reason in status["verdict"], status
    # a reader that is gone before status prints (`true` exits at once) is no crash
    shell = f"{sys.executable} -m collector status --config {config} | true"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", shell],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 3 and "Traceback" not in result.stderr, result.stderr


# 3. Two rules with the same value ------------------------------------------------------------


def test_two_rules_with_the_same_value_exit_78_naming_both_entries(
    tmp_path: Path, x_server
) -> None:
    rules = [("python lang:en", "python"), ("python lang:en", "py2")]
    config = write_config(tmp_path, x_server.url, rules=rules)
    for command in ("run", "rules"):
        argv = ["rules", "sync"] if command == "rules" else ["run"]
        result = run_cli(*argv, "--config", str(config))
        assert result.returncode == 78
        assert "'x.rules[0]' and 'x.rules[1]' have the same value" in result.stderr
    assert x_server.rules == {}


def test_rules_sync_of_a_value_another_client_holds_prints_the_truth_and_stays_green(
    tmp_path: Path, x_server
) -> None:
    held = x_server.add_rule("python lang:en", tag="another-app:python")
    rules = [("python lang:en", "python"), ("rust", "rs")]
    config = write_config(tmp_path, x_server.url, rules=rules)
    first = run_cli("rules", "sync", "--config", str(config))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "shared   tag=test-1:python  python lang:en  (X keeps one rule per value" in first.stdout
    assert f"live as rule {held}, tag=another-app:python" in first.stdout
    assert "1 added" in first.stdout
    again = run_cli("rules", "sync", "--config", str(config))
    assert again.returncode == 0 and "0 added" in again.stdout and "shared" in again.stdout


# 4. X accepts, sends the operational disconnect and closes, on every connection --------------


@pytest.mark.slow  # waits out STREAM_DEGRADED_AFTER (30 s, a real timer)
def test_x_closing_every_connection_backs_off_and_shows_degraded_with_xs_reason(
    tmp_path: Path, x_server, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    x_server.disconnect_every_connection = True
    config = write_config(tmp_path, x_server.url)
    collector = CollectorProcess(config)
    try:
        # STREAM_DEGRADED_AFTER (30 s): a lone disconnect is a blip, a loop is a state.
        code, status = wait_for_health(config, "degraded", 60)
        assert code == 1
        assert "operational-disconnect" in status["health_reason"]
        assert (
            "This stream has been disconnected for operational reasons" in status["health_reason"]
        )
        seconds = 30 + 10
        assert x_server.connections <= 12, x_server.connections  # was ~300 a second
    finally:
        assert collector.stop() == 0, collector.log
    lines = collector.log.splitlines()
    assert len(lines) < 10 * seconds, len(lines)  # was ~900 a second
    # each identical warning: the first three, then one line with a count per minute
    for source in ("WARNING collector.spool.writer:", "WARNING collector.source.stream:"):
        said = [line for line in lines if source in line and "operational-disconnect" in line]
        assert 3 <= len(said) <= 4, said
        assert all("repeated" in line for line in said[3:]), said
    assert sum("health: degraded" in line for line in lines) == 1


# 5. X answers every connection with 429 UsageCapExceeded --------------------------------------


def test_a_usage_cap_429_shows_failing_with_xs_title_and_detail(
    tmp_path: Path, x_server, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    x_server.refuse_streams(429, "UsageCapExceeded")
    config = write_config(tmp_path, x_server.url)
    collector = CollectorProcess(config)
    try:
        code, status = wait_for_health(config, "failing", 30)
        assert code == 1
        assert (
            "HTTP 429 UsageCapExceeded: Usage cap exceeded: Monthly product cap"
            in status["health_reason"]
        )
        human = run_cli("status", "--config", str(config))
        assert human.returncode == 1 and "failing: X monthly cap reached; lifts on" in human.stdout
    finally:
        assert collector.stop() == 0, collector.log
    assert "UsageCapExceeded" in collector.log


# 6. S3 refuses every PUT (the trailing-slash prefix case: tests/provision/test_prefix.py) ---


def test_s3_refusing_uploads_shows_failing_with_the_code_and_key_prefix_then_recovers(
    tmp_path: Path, x_server, moto_iam
) -> None:
    moto_iam.client("s3").create_bucket(Bucket=BUCKET)
    read_only = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{BUCKET}"}
        ],
    }
    key = moto_iam.create_user("collector", read_only)
    config = write_config(tmp_path, x_server.url, s3_endpoint=moto_iam.url, max_seconds=0.5)
    grace = "compression_level = 1\nfailing_after_seconds = 3"  # S3 refusals: failing after 3 s
    config.write_text(config.read_text().replace("compression_level = 1", grace))
    collector = CollectorProcess(config, env=moto_iam.env(key))
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        x_server.count = 10
        code, status = wait_for_health(config, "failing", 60)
        assert code == 1
        reason = status["health_reason"]
        assert "S3 refuses uploads: AccessDenied (HTTP 403)" in reason
        # the key prefix of the last refused PUT: a post file (tweets/dt=...) or an events file
        # (tweets/_events/dt=...), whichever the uploaders tried last
        assert re.search(rf"s3://{BUCKET}/tweets/(_events/)?dt=\d{{4}}-", reason), reason
        assert "retried" in reason
        # still retried: once allowed, everything lands and the health is back
        moto_iam.client("iam").put_user_policy(
            UserName="collector",
            PolicyName="collector-inline",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                    ],
                }
            ),
        )
        wait_for_health(config, "healthy", 90)
    finally:
        assert collector.stop() == 0, collector.log
    assert len(s3_post_ids(moto_iam.client("s3"))) == 10


# 7. s3.bucket = "s3://name" -------------------------------------------------------------------


def test_an_s3_url_as_the_bucket_exits_78_naming_s3_bucket(tmp_path: Path, x_server) -> None:
    config = write_config(tmp_path, x_server.url, bucket=f"s3://{BUCKET}")
    collector = CollectorProcess(config)
    assert collector.wait(30) == 78
    assert "'s3.bucket' must be a bare bucket name, without a scheme" in collector.log
    check = run_cli("check", "--config", str(config))
    assert check.returncode == 78 and "'s3.bucket'" in check.stdout


# Around them ----------------------------------------------------------------------------------


def test_a_graceful_stop_is_not_a_server_close_nor_a_reconnect(
    tmp_path: Path, x_server, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url)
    collector = CollectorProcess(config)
    wait_until(lambda: status_of(config)[1].get("connection") == "connected", 30, 0.5)
    collector.signal(signal.SIGTERM)
    assert collector.wait(40) == 0, collector.log
    assert "closed by the server" not in collector.log
    assert json.loads((tmp_path / "spool" / "status.json").read_text())["reconnects"] == 0


def test_repeated_identical_warnings_are_a_few_then_a_count_a_minute(caplog) -> None:
    now = [0.0]
    warnings = RepeatedWarnings(logging.getLogger("test.lograte"), clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.lograte"):
        for _ in range(100):
            warnings.warning("closed", "stream closed")
            now[0] += 0.1  # 100 in 10 s
        now[0] += 60
        warnings.warning("closed", "stream closed")
    messages = [record.getMessage() for record in caplog.records]
    assert messages[:3] == ["stream closed"] * 3
    assert messages[3:] == ["stream closed (repeated 98 times in the last 70 s)"]


def test_connected_but_quiet_is_shown_and_still_healthy(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    spool = tmp_path / "spool"
    spool.mkdir()
    # A live process whose command line names the collector, as the real one does.
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "collector"])
    try:
        now = datetime.now(UTC)
        status = {
            "pid": stand_in.pid,
            "collector_id": "test-1",
            "state": "running",
            "started_at": (now - timedelta(hours=1)).isoformat(),
            "updated_at": now.isoformat(),
            "health": "healthy",
            "health_reason": None,
            "connection": "connected",
            "connection_since": (now - timedelta(hours=1)).isoformat(),
            "last_post_at": (now - timedelta(minutes=12)).isoformat(),
        }
        (spool / "status.json").write_text(json.dumps(status))
        quiet = run_cli("status", "--config", str(config))
        assert quiet.returncode == 0, quiet.stdout
        assert "healthy, connected, no post for 12 min" in quiet.stdout
        status.update(health="failing", health_reason="S3 refuses uploads: AccessDenied")
        (spool / "status.json").write_text(json.dumps(status))
        failing = run_cli("status", "--config", str(config))
        assert failing.returncode == 1
        assert "failing: S3 refuses uploads: AccessDenied" in failing.stdout
    finally:
        stand_in.kill()
        stand_in.wait()


def test_a_condition_counts_after_its_delay_and_fails_after_its_grace() -> None:
    now = [0.0]
    health = Health(clock=lambda: now[0])
    health.report("s3", DEGRADED, "S3 refuses uploads: AccessDenied", failing_after=120)
    health.report("stream", DEGRADED, "X stream: closed", degraded_after=30)
    assert health.state() == (DEGRADED, "S3 refuses uploads: AccessDenied")
    now[0] = 31
    health.report("s3", DEGRADED, "S3 refuses uploads: AccessDenied (again)", failing_after=120)
    assert health.state() == (
        DEGRADED,
        "S3 refuses uploads: AccessDenied (again); X stream: closed",
    )
    now[0] = 121  # the s3 condition started at 0: repeated reports keep its start
    # failing first, the milder condition still named (it is a cause to act on too)
    assert health.state() == (
        FAILING,
        "S3 refuses uploads: AccessDenied (again); X stream: closed",
    )
    assert health.behind() == ["s3"]
    health.clear("s3")
    health.clear("stream")
    assert health.state() == (HEALTHY, None)


# 8. X's stream stalls: open, but not a byte, not even a keep-alive ------------------------------


@pytest.mark.slow  # tweepy's 21 s read timeout and the 30 s grace are real timers
def test_a_stalled_stream_is_degraded_from_its_last_byte_and_repaired_from_there(
    tmp_path: Path, s3, aws_env
) -> None:
    """A stall longer than tweepy's 21 s timeout and the 30 s grace, over two connections: the
    status is degraded naming the stall within 35 s of the last byte (not healthy because a new
    connection opened), healthy again once data flows, the stall then only a resolved error,
    and the gap repair span starts at the last byte received, not when tweepy noticed: what X
    matched in the stall (and did not deliver) is stored."""
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=5, keepalive_interval=1.0).start()
    config = write_config(
        tmp_path, server.url, s3_endpoint=aws_env.url, x_extra="repair_margin_seconds = 0"
    )
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: server.streams_open == 1 and len(server.sent_ids) > 5, 30)
        server.stall(40)
        stalled_at = time.time()
        code, degraded = wait_for_health(config, DEGRADED, 40)
        noticed = time.time() - stalled_at
        assert code == 1 and noticed < 35, (noticed, degraded)
        assert re.search(
            r"X stream: no data from X for \d+ s \(stalled; X sends a keep-alive every 20 s\)",
            degraded["health_reason"],
        ), degraded
        assert degraded["last_stream_error"].startswith("no data from X for ")
        assert degraded["last_error"].startswith("X stream: no data from X for ")
        code, healthy = wait_for_health(config, HEALTHY, 40)
        assert time.time() - stalled_at >= 39, "healthy only once data flows again"
        assert healthy["last_error"] is None and healthy["last_stream_error"] is None, healthy
        assert healthy["resolved_error"].startswith("X stream: no data from X for "), healthy
        assert healthy["resolved_error_at"] and healthy["recovered_at"]

        def repaired() -> str | None:
            last = status_of(config)[1].get("repair_last") or ""
            return last if last.startswith("repaired ") else None

        repair = wait_until(repaired, 40, 0.5)
        matched = {str(p.id) for p in server.missed_posts(stalled_at, stalled_at + 40)}
        searchable = matched - {str(p.id) for p in server.missed_posts() if p.repost}
        wait_until(lambda: searchable <= set(s3_post_ids(s3)), 20, 0.5)
    finally:
        code = collector.stop()
        server.stop()
    assert code == 0, collector.log
    start, end = re.match(r"repaired (\S+) to (\S+):", repair).groups()
    span = [datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in (start, end)]
    # the last byte: a post or a keep-alive at most a second before the stall
    assert stalled_at - 3 <= span[0] <= stalled_at, (repair, stalled_at)
    assert span[1] >= stalled_at + 39, (repair, stalled_at)
    assert len(searchable) >= 100, "40 s at 5 posts/s, a few reposts aside"
    log = collector.log
    assert log.count("health: degraded") == 1, log
    assert log.count("health: healthy") <= 1, log
