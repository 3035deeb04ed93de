"""Observability: status.json kept fresh; `collector status` (and --json) and its exit codes."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.spool.layout import SpoolDirs
from collector.telemetry.metrics import Metrics
from collector.telemetry.status import StatusReporter
from tests.collector_support import (
    BUCKET,
    CollectorProcess,
    run_cli,
    wait_until,
    write_config,
    x_server_fixture,
)
from tests.fakes.x_server import FakeXServer

COLLECTOR = Path(__file__).resolve().parents[2] / "collector"


x_server = x_server_fixture(keepalive_interval=1.0, count=0)


def status_json(config: Path) -> tuple[int, dict]:
    result = run_cli("status", "--json", "--config", str(config))
    return result.returncode, json.loads(result.stdout)


def test_status_of_a_running_collector_then_a_stopped_one(
    tmp_path: Path, x_server: FakeXServer, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, max_seconds=0.5)
    assert run_cli("status", "--config", str(config)).returncode == 3  # never started
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        x_server.count = 120
        x_server.inject("malformed")

        def caught_up() -> dict | None:
            code, status = status_json(config)
            done = status.get("posts_received") == 120 and status.get("files_uploaded", 0) >= 1
            return status if code == 0 and done and status.get("pending_files") == 0 else None

        status = wait_until(caught_up, 30, 0.5)
        assert status["connection"] == "connected" and status["state"] == "running"
        assert status["quarantined_lines"] == 1 and status["healthy"] is True
        assert status["records_sealed"] == 120 and status["connects"] == 1
        assert status["keep_alives"] >= 1  # the stand-in sends one every second
        for never in ("http_errors", "spool_write_errors", "compress_errors", "upload_errors"):
            assert status[never] == 0, never
        assert status["last_upload_key"].startswith("tweets/dt=")
        assert status["last_post_at"] and status["last_upload_at"]
        human = run_cli("status", "--config", str(config))
        assert human.returncode == 0
        assert human.stdout.startswith("collector test-1: running (pid ")
        assert "posts_received" in human.stdout
        written = datetime.fromisoformat(status["updated_at"])
        assert datetime.now(UTC) - written < timedelta(seconds=10)
    finally:
        assert collector.stop() == 0
    code, status = status_json(config)
    assert code == 3 and status["state"] == "stopped"
    assert "progress: 120 posts" in collector.log  # the final progress line


def status_cli(config: Path, *args: str) -> tuple[int, dict]:
    result = run_cli("status", "--json", "--config", str(config), *args)
    return result.returncode, json.loads(result.stdout)


def test_a_real_disconnect_shows_in_status_and_fails_it_once_the_limit_passes(
    tmp_path: Path, x_server: FakeXServer, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, max_seconds=0.5)
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        wait_until(lambda: status_json(config)[1].get("connection") == "connected", 20, 0.5)
        # X goes away: the stream is closed and every reconnect is answered 503 (tweepy backs
        # off 5 s, 10 s, 20 s... so the stream stays down for the rest of the test).
        x_server.fail_next(503, 1000)
        x_server.operational_disconnect()
        disconnected_at = time.time()

        def disconnected() -> dict | None:
            status = status_json(config)[1]
            return status if status.get("connection") == "disconnected" else None

        status = wait_until(disconnected, 20, 0.5)
        since = datetime.fromisoformat(status["connection_since"]).timestamp()
        assert disconnected_at - 2 <= since <= time.time()
        # Within the limit (5 minutes by default) a disconnect is not a failure yet...
        code, verdict = status_cli(config)
        assert code == 0 and verdict["verdict"].endswith("disconnected"), verdict
        # ...past the limit `collector status` fails and says for how long.
        code, verdict = wait_until(
            lambda: (r := status_cli(config, "--max-disconnected", "3"))[0] == 1 and r, 30, 0.5
        )
        assert "disconnected for" in verdict["verdict"] and verdict["healthy"] is False
        assert x_server.connections >= 2  # the collector kept trying
    finally:
        assert collector.stop() == 0, collector.log


def test_status_fails_when_disconnected_for_over_five_minutes(tmp_path: Path) -> None:
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
            "updated_at": now.isoformat(),
            "connection": "disconnected",
            "connection_since": (now - timedelta(minutes=6)).isoformat(),
        }
        (spool / "status.json").write_text(json.dumps(status))
        result = run_cli("status", "--config", str(config))
        assert result.returncode == 1
        assert "disconnected for" in result.stdout
        status["connection_since"] = (now - timedelta(minutes=1)).isoformat()
        (spool / "status.json").write_text(json.dumps(status))
        assert run_cli("status", "--config", str(config)).returncode == 0
    finally:
        stand_in.kill()
        stand_in.wait()
    # pid gone
    wait_until(lambda: run_cli("status", "--config", str(config)).returncode == 3, 10)


def metric_names_in_code() -> dict[str, set[str]]:
    """Names the collector's code passes to Metrics.incr / Metrics.set, through the handles
    of collector.telemetry.metrics (`x.incr(POSTS_RECEIVED)`) or as text (`x.incr("name")`)."""
    from collector.telemetry import metrics as declared

    found: dict[str, set[str]] = {"incr": set(), "set": set()}
    for source in COLLECTOR.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in found
                and node.args
            ):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found[node.func.attr].add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id.isupper():
                handle = getattr(declared, arg.id, None)
                if isinstance(handle, declared.Metric | declared.Field):
                    found[node.func.attr].add(handle.name)
    return found


def test_every_counter_the_code_keeps_is_in_status_json(tmp_path: Path) -> None:
    names = metric_names_in_code()
    assert {"posts_received", "connects", "records_sealed"} <= names["incr"] | names["set"]
    status = StatusReporter("test-1", SpoolDirs(tmp_path), Metrics()).write()
    written = json.loads(SpoolDirs(tmp_path).status_file.read_text())
    assert written == status
    assert sorted(names["incr"] - set(written)) == []
    assert sorted(names["set"] - set(written)) == []


def test_an_error_from_before_the_recovery_is_shown_as_resolved_not_current(
    tmp_path: Path, x_server: FakeXServer, s3
) -> None:
    """X refuses one connection (503): last_error names it while it matters; once the stream is
    back and healthy, status shows it as resolved_error, and last_error is empty."""
    s3.create_bucket(Bucket=BUCKET)
    x_server.fail_next(503, 1)
    config = write_config(tmp_path, x_server.url, max_seconds=0.5)
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections >= 2, 30)  # tweepy's own backoff, a few seconds
        x_server.count = 5

        def recovered() -> dict | None:
            code, status = status_json(config)
            return status if code == 0 and status.get("resolved_error") else None

        status = wait_until(recovered, 20, 0.3)
        assert status["health"] == "healthy" and status["last_error"] is None
        assert "503" in status["resolved_error"], status
        assert status["last_error_at"] is None and status["last_stream_error"] is None, status
        assert status["resolved_error_at"] <= status["recovered_at"], status
        shown = run_cli("status", "--config", str(config)).stdout
        assert "last_error " in shown and "resolved_error " in shown
    finally:
        assert collector.stop() == 0, collector.log
