"""S3 problems named for what they are, and `check` with the collector's own key.

A RecordingProxy in front of moto answers as S3 does where moto cannot (tests/fakes/s3_answers.py):
a clock too far from S3's, a bucket in another region.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.collector_support import (
    BUCKET,
    REPO,
    CollectorProcess,
    run_cli,
    wait_until,
    write_config,
    x_server_fixture,
)
from tests.fakes.http_recorder import RecordingProxy
from tests.fakes.s3_answers import bucket_in_region, clock_ahead

SKEW_LINE = re.compile(
    r"RequestTimeTooSkewed: this machine's clock is 1 h 1 min \d+ s behind S3's \(request signed "
    r"at \S+Z, S3's time \S+Z; S3 accepts 15 min\): set the clock \(timedatectl; chrony or "
    r"systemd-timesyncd\)"
)
REDIRECT_LINE = (
    f"PermanentRedirect: bucket '{BUCKET}' is in region eu-west-1 (S3's x-amz-bucket-region), "
    "not s3.region 'us-east-1': set s3.region to eu-west-1 and s3.endpoint_url (now {url}) to "
    "that region's endpoint or empty"
)


x_server = x_server_fixture(count=0)


@pytest.fixture
def s3_proxy(aws_env, s3) -> Iterator[RecordingProxy]:
    s3.create_bucket(Bucket=BUCKET)
    proxy = RecordingProxy(aws_env.port).start()
    yield proxy
    proxy.stop()


def check_line(config: Path) -> str:
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1, result.stdout + result.stderr
    (line,) = [line for line in result.stdout.splitlines() if "S3 bucket" in line]
    return line


def test_check_names_a_wrong_clock_with_the_skew_s3_reports(tmp_path, x_server, s3_proxy) -> None:
    s3_proxy.answer = clock_ahead(3700)  # S3's clock (the right one) 1 h 1 min 40 s ahead
    config = write_config(tmp_path, x_server.url, s3_endpoint=s3_proxy.url)
    line = check_line(config)
    assert line.startswith(f"FAIL  S3 bucket: S3 bucket '{BUCKET}': RequestTimeTooSkewed: ")
    assert SKEW_LINE.search(line), line
    assert "access denied" not in line and "s3:ListBucket" not in line


def test_check_names_the_region_of_a_bucket_in_another_region(tmp_path, x_server, s3_proxy) -> None:
    s3_proxy.answer = bucket_in_region("eu-west-1")
    config = write_config(tmp_path, x_server.url, s3_endpoint=s3_proxy.url)
    line = check_line(config)
    assert line == (
        f"FAIL  S3 bucket: S3 bucket '{BUCKET}': " + REDIRECT_LINE.format(url=s3_proxy.url)
    )


def test_status_and_log_name_the_skew_while_uploads_wait(tmp_path, x_server, s3_proxy) -> None:
    config = write_config(tmp_path, x_server.url, s3_endpoint=s3_proxy.url, max_seconds=0.5)
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        s3_proxy.answer = clock_ahead(3700)  # the clock goes wrong while it runs
        x_server.count = 5

        def degraded() -> dict | None:
            status = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
            return status if status.get("health") == "degraded" else None

        status = wait_until(degraded, 30, 0.3)
        assert status["health_reason"].startswith("S3 refuses uploads: RequestTimeTooSkewed: ")
        assert SKEW_LINE.search(status["health_reason"]), status["health_reason"]
        assert SKEW_LINE.search(status["last_error"] or ""), status["last_error"]
        wait_until(lambda: SKEW_LINE.search(collector.log), 10)
        s3_proxy.answer = None  # the clock is set: the files waiting in the spool go up
        wait_until(lambda: "healthy" in run_cli("status", "--config", str(config)).stdout, 60)
    finally:
        assert collector.stop() == 0, collector.log


def test_check_uses_the_collectors_key_from_the_config_not_the_callers_environment(
    tmp_path, x_server, moto_iam
) -> None:
    """`sudo collector check` on the instance: root's environment has no AWS key (or another
    one); the collector's key is in the file the config names (s3.credentials_file)."""
    moto_iam.client("s3").create_bucket(Bucket=BUCKET)
    bucket = f"arn:aws:s3:::{BUCKET}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket}],
    }
    key = moto_iam.create_user("collector", policy)
    credentials = tmp_path / "aws_credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {key.access_key_id}\n"
        f"aws_secret_access_key = {key.secret_access_key}\n"
    )
    credentials.chmod(0o600)
    config = write_config(tmp_path, x_server.url, s3_endpoint=moto_iam.url)
    without = run_cli("check", "--config", str(config))  # the caller has no key: boto3 finds none
    assert "FAIL  S3 bucket" in without.stdout and "NoCredentialsError" in without.stdout
    text = config.read_text().replace(
        'compression = "gzip"', f'compression = "gzip"\ncredentials_file = "{credentials}"'
    )
    config.write_text(text)
    unknown = {"AWS_ACCESS_KEY_ID": "AKIAUNKNOWN000000000", "AWS_SECRET_ACCESS_KEY": "x" * 40}
    for env in ({}, unknown):  # none, or another key in the caller's environment
        result = run_cli("check", "--config", str(config), env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"ok    S3 bucket: s3://{BUCKET}/tweets reachable with the key in {credentials}" in (
            result.stdout
        )
        assert key.secret_access_key not in result.stdout + result.stderr


def test_report_and_export_where_duckdb_is_not_installed_say_where_to_run_them(
    tmp_path, x_server
) -> None:
    """The instance's environment leaves DuckDB out (docs/analysis.md): one line, no traceback."""
    config = write_config(tmp_path, x_server.url)
    for command in ("report", "export"):
        script = (
            "import sys; sys.modules['duckdb'] = None; from collector.cli import main; "
            f"sys.exit(main(['{command}', '--config', '{config}', '--since', '1h']))"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 69, result.stderr
        assert result.stderr.splitlines() == [
            f"collector: error: collector {command} needs DuckDB, which the instance's "
            "environment leaves out (its memory and disk are the collector's): run it on your "
            "computer, in this repository's .venv, with a copy of the config: "
            f".venv/bin/python -m collector {command} --config collector.toml ... "
            "(docs/analysis.md)"
        ]
