"""The CLI as supervisor and operators see it: exit 78 with one clear line, `check`, no secrets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    run_cli,
    wait_until,
    write_config,
    x_server_fixture,
)
from tests.conftest import REPO
from tests.fakes.x_server import FakeXServer

x_server = x_server_fixture(keepalive_interval=1.0, count=0)


def run_and_expect_78(config: Path, *needles: str, env: dict | None = None) -> str:
    result = run_cli("run", "--config", str(config), env=env, timeout=60)
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line or "error:" in line]
    assert result.returncode == 78, result.stderr
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]
    assert "Traceback" not in result.stderr
    assert TOKEN not in result.stdout + result.stderr
    return errors[0]


def test_unknown_key_and_wrong_type_exit_78_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", extra="colour = 'blue'")
    run_and_expect_78(config, "unknown key 'colour'", str(config))
    config = write_config(tmp_path, "http://127.0.0.1:9")
    config.write_text(config.read_text().replace("max_records = 500", 'max_records = "many"'))
    run_and_expect_78(config, "'rotate.max_records' must be a positive integer, got a string")


def test_missing_token_file_exits_78(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    (tmp_path / "x_bearer_token").unlink()
    run_and_expect_78(config, "bearer token file", "not found", env={"X_BEARER_TOKEN": ""})


def test_rejected_token_exits_78_instead_of_retrying_forever(
    tmp_path: Path, x_server: FakeXServer, s3, aws_env
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    env = {"X_BEARER_TOKEN": "revoked-token-123"}
    run_and_expect_78(
        write_config(tmp_path, x_server.url), "HTTP 401", "token from X_BEARER_TOKEN", env=env
    )
    # The sample stream has no rules call at start: the stream itself must notice the 401.
    line = run_and_expect_78(write_config(tmp_path, x_server.url, stream="sample"), env=env)
    assert "HTTP 401" in line and "revoked-token-123" not in line
    assert "bearer token from X_BEARER_TOKEN" in line


def test_a_rejected_token_file_is_named_by_check_and_run(tmp_path: Path, x_server, s3) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url)
    (tmp_path / "x_bearer_token").write_text("revoked-token-123\n")
    named = f"x.bearer_token_file {tmp_path / 'x_bearer_token'}"
    check = run_cli("check", "--config", str(config), env={"X_BEARER_TOKEN": ""})
    assert check.returncode == 1 and named in check.stdout, check.stdout
    run_and_expect_78(config, "HTTP 401", named, env={"X_BEARER_TOKEN": ""})


def test_missing_bucket_exits_78(tmp_path: Path, x_server: FakeXServer, aws_env) -> None:
    run_and_expect_78(
        write_config(tmp_path, x_server.url, bucket="no-such-bucket"), "no-such-bucket"
    )


def test_check_prints_one_line_per_check(tmp_path: Path, x_server: FakeXServer, s3) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url)
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok    config",
        "ok    X request",
        "ok    bearer token",
        "ok    X API auth",
        "ok    X rules",
        "ok    X monthly cap",
        "ok    X credits",
        "ok    S3 bucket",
    ]
    bad = run_cli("check", "--config", str(config), env={"X_BEARER_TOKEN": "nope-nope"})
    assert bad.returncode == 1
    assert any(line.startswith("FAIL  X API auth") for line in bad.stdout.splitlines())
    assert "nope-nope" not in bad.stdout + bad.stderr


def test_secrets_never_reach_the_logs(tmp_path: Path, x_server: FakeXServer, s3, aws_env) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, max_seconds=0.5)
    secret_key = "aws-SECRET-key-value-42"
    collector = CollectorProcess(config, env={"AWS_SECRET_ACCESS_KEY": secret_key})
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        x_server.count = 20
        x_server.fail_next(503, 1)
        x_server.operational_disconnect()
        wait_until(lambda: x_server.connections >= 3, 20)
        # uploads fail (wrong secret), so errors get logged and written to status.json
        wait_until(
            lambda: "upload" in collector.log.lower() or "error" in collector.log.lower(), 20
        )
    finally:
        collector.stop()
    status = (tmp_path / "spool" / "status.json").read_text()
    for text in (collector.log, status):
        assert TOKEN not in text
        assert secret_key not in text


@pytest.mark.parametrize(
    "url",
    ["http://api.x.com", "http://203.0.113.7:8080", "http://127.0.0.1.example.com", "http://[::2]"],
)
def test_a_plain_http_x_api_url_off_this_machine_exits_78_naming_the_key(
    tmp_path: Path, url: str
) -> None:
    """The bearer token would cross the network in clear text: refused before any request."""
    config = write_config(tmp_path, url)
    error = run_and_expect_78(config, "'x.api_base_url' must be an https:// URL", url)
    assert "loopback host only" in error


def test_plain_http_to_a_loopback_x_is_accepted(tmp_path: Path, x_server) -> None:
    for url in (x_server.url, x_server.url.replace("127.0.0.1", "localhost")):
        config = write_config(tmp_path, url)
        done = run_cli("check", "--config", str(config), timeout=60)
        assert "api_base_url" not in done.stderr, done.stderr


COMPACT_LINE = "fields compact: 8 post fields, 1 expansion, 2 user fields"


def test_check_names_the_capture_profile_and_its_counts(tmp_path: Path, x_server, s3) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, x_extra='fields = "compact"')
    lines = run_cli("check", "--config", str(config)).stdout.splitlines()
    assert f"ok    X request: {COMPACT_LINE}" in lines
    config = write_config(tmp_path, x_server.url)
    lines = run_cli("check", "--config", str(config)).stdout.splitlines()
    assert (
        "ok    X request: fields full: 26 post fields, 13 expansions, 19 user fields, "
        "10 media fields, 5 poll fields, 8 place fields"
    ) in lines


def test_the_running_line_names_what_the_collector_asked_x_for(tmp_path: Path, x_server, s3):
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, x_extra='tweet_fields = ["lang"]')
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        wait_until(lambda: "running:" in collector.log, 10)
    finally:
        collector.stop()
    assert x_server.stream_queries[0] == {"tweet.fields": ["lang"]}
    running = next(line for line in collector.log.splitlines() if "running:" in line)
    assert running.endswith(
        f"collector test-1 running: filter stream from {x_server.url} (fields per-kind lists: "
        f"1 post field), spool {tmp_path / 'spool'}, bucket {BUCKET}"
    )


def test_a_stop_on_an_idle_stream_leaves_status_disconnected(tmp_path: Path, x_server, s3):
    """X sends only keep-alives (count 0); after SIGTERM the connection is closed, and
    status.json must say so: stopped and connected together would be a lie."""
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url)
    status_file = tmp_path / "spool" / "status.json"
    x_server.keepalive_interval = 20.0  # X's: the reader is not woken during the stop

    def status() -> dict:
        try:
            return json.loads(status_file.read_text())
        except (OSError, ValueError):
            return {}

    collector = CollectorProcess(config)
    try:
        wait_until(lambda: status().get("connection") == "connected", 20)
    finally:
        assert collector.stop() == 0
    final = status()
    assert (final["state"], final["connection"]) == ("stopped", "disconnected")


def test_check_piped_into_head_stops_quietly_when_the_reader_has_gone(tmp_path: Path) -> None:
    """`collector check | head -1`: a closed stdout is no bug (no traceback, no CRITICAL); the
    exit code is 141 (128 + SIGPIPE), what a shell reports for a Unix tool in that pipe."""
    x_api = socket.create_server(("127.0.0.1", 0))  # accepts, never answers until closed
    config = write_config(tmp_path, f"http://127.0.0.1:{x_api.getsockname()[1]}")
    read_end, write_end = os.pipe()
    check = subprocess.Popen(
        [sys.executable, "-m", "collector", "check", "--config", str(config)],
        cwd=REPO,
        stdout=write_end,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as reader:
        first = reader.readline()  # then `head -1` exits: the pipe has no reader any more
    x_api.close()  # check, waiting for X, now writes its next line into the closed pipe
    _, stderr = check.communicate(timeout=60)
    assert first.startswith(b"ok    config: "), first
    assert (check.returncode, stderr) == (141, "")


def test_check_as_a_user_who_may_not_read_the_config_says_to_run_it_with_sudo() -> None:
    """On the instance the config is root's and the collector user's group's (mode 0640): an
    operator's `check` gets the command to run as root in the one FAIL line, exit 78."""
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        config = Path(folder) / "collector.toml"
        config.write_text('collector_id = "test-1"\n')
        config.chmod(0o640)
        # The interpreter lives under /root (0700): it starts as root, loads what check needs,
        # then becomes nobody.
        as_nobody = (
            "import os, sys; import collector.cli as cli, collector.source.rules; "
            "cli.build_parser().parse_args(['check']); "
            "os.setgroups([]); os.setgid(65534); os.setuid(65534); "
            f"sys.exit(cli.main(['check', '--config', {str(config)!r}]))"
        )
        result = subprocess.run(
            [sys.executable, "-c", as_nobody],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 78, result.stderr
    assert result.stdout.splitlines() == [
        f"FAIL  config: {config}: permission denied reading the config file: run check as "
        f"root: sudo {sys.executable} -m collector check --config {config} (docs/operations.md)"
    ]
