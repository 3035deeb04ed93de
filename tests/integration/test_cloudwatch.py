"""Metrics to CloudWatch: the collector between the X stand-in and moto publishes what
it received and shipped; a CloudWatch outage or refusal costs neither posts nor speed."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import yaml

from collector.config import parse_config
from collector.source.stream import STREAM_DEGRADED_AFTER
from collector.telemetry.cloudwatch import NAMESPACE, CloudWatchPublisher, make_client
from collector.telemetry.metrics import PUBLISHED, Metrics
from tests.collector_support import (
    BUCKET,
    CollectorProcess,
    s3_post_ids,
    wait_until,
    write_config,
    x_server_fixture,
)
from tests.conftest import AccessKey, IamMoto, MotoServer
from tests.fakes.tcp_proxy import OutageProxy
from tests.fakes.x_server import FakeXServer

# The metrics the alarms and docs/operations.md name, in CloudWatch's words.
EXPECTED_METRICS = {
    "PostsReceived",
    "BytesUploaded",
    "FilesPending",
    "OldestPendingFileAge",
    "UploadErrors",
    "Reconnects",
    "Connected",
    "Healthy",
    "SpoolDiskFree",
    "BillablePosts",
    "EstimatedSpendUSD",
    "EstimatedSpendUSDForecast",
    "ComplianceRunFailed",
    "ComplianceRunAge",
    "BudgetPaused",
}


x_server = x_server_fixture(keepalive_interval=1.0, count=0)


def cloudwatch_toml(endpoint: str, interval: float = 1) -> str:
    return (
        f'[cloudwatch]\nenabled = true\nregion = "us-east-1"\n'
        f'endpoint_url = "{endpoint}"\ninterval_seconds = {interval}\n'
    )


def read_status(tmp: Path) -> dict:
    try:
        return json.loads((tmp / "spool" / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def metric_values(
    cloudwatch, name: str, stat: str, collector_id: str = "test-1", period: int = 60
) -> list[float]:
    """GetMetricData, one value per period that has data, oldest first: the last hour by
    minutes, or (period < 60) the last 30 seconds."""
    now = datetime.now(UTC)
    start = now - (timedelta(hours=1) if period >= 60 else timedelta(seconds=30))
    answer = cloudwatch.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "TwitterSnake",
                        "MetricName": name,
                        "Dimensions": [{"Name": "CollectorId", "Value": collector_id}],
                    },
                    "Period": period,
                    "Stat": stat,
                },
            }
        ],
        StartTime=start,
        EndTime=now + timedelta(minutes=5),
        ScanBy="TimestampAscending",
    )
    (result,) = answer["MetricDataResults"]
    return result["Values"]


def test_collector_publishes_what_it_received_and_uploaded(
    tmp_path: Path, x_server: FakeXServer, s3, aws_env: MotoServer
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    cloudwatch = boto3.client("cloudwatch", endpoint_url=aws_env.url, region_name="us-east-1")
    config = write_config(
        tmp_path,
        x_server.url,
        s3_endpoint=aws_env.url,
        max_seconds=0.5,
        extra=cloudwatch_toml(aws_env.url),
    )
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        x_server.count = 150
        wait_until(lambda: len(s3_post_ids(s3)) >= 150, 40, 0.5)
        wait_until(lambda: read_status(tmp_path).get("pending_files") == 0, 20)
        # at least one sample published while connected and caught up
        wait_until(lambda: 1.0 in metric_values(cloudwatch, "Connected", "Maximum"), 20, 0.5)
    finally:
        assert collector.stop() == 0
    assert "publishing metrics to CloudWatch every 1 s" in collector.log

    listed = cloudwatch.list_metrics(Namespace="TwitterSnake")["Metrics"]
    # no forecast in a run's first 10 minutes (collector.telemetry.ledger.FORECAST_AFTER)
    assert {m["MetricName"] for m in listed} == EXPECTED_METRICS - {"EstimatedSpendUSDForecast"}
    assert all(m["Dimensions"] == [{"Name": "CollectorId", "Value": "test-1"}] for m in listed)

    ids = s3_post_ids(s3)
    assert sorted(ids) == sorted(x_server.sent_ids) and len(ids) == 150
    # counters go up as increases per sample: their sum is the process's total
    assert sum(metric_values(cloudwatch, "PostsReceived", "Sum")) == 150
    objects = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
    assert sum(metric_values(cloudwatch, "BytesUploaded", "Sum")) == sum(o["Size"] for o in objects)
    final = read_status(tmp_path)  # written at stop, after the last sample
    assert final["upload_errors"] == 0 and x_server.connections == 1
    assert sum(metric_values(cloudwatch, "UploadErrors", "Sum")) == 0
    # the stop itself closes the stream (counted); nothing else did
    assert sum(metric_values(cloudwatch, "Reconnects", "Sum")) == final["reconnects"] <= 1
    assert set(metric_values(cloudwatch, "Healthy", "Minimum")) == {1.0}
    # what X bills: 150 unique posts today at the list price, never paused
    assert max(metric_values(cloudwatch, "BillablePosts", "Maximum")) == 150
    assert max(metric_values(cloudwatch, "EstimatedSpendUSD", "Maximum")) == pytest.approx(0.75)
    assert set(metric_values(cloudwatch, "BudgetPaused", "Maximum")) == {0.0}
    assert min(metric_values(cloudwatch, "FilesPending", "Minimum")) == 0
    assert min(metric_values(cloudwatch, "OldestPendingFileAge", "Minimum")) == 0
    disk = os.statvfs(tmp_path)
    free = 100.0 * disk.f_bavail / disk.f_blocks
    published_free = metric_values(cloudwatch, "SpoolDiskFree", "Average")
    assert published_free and all(abs(p - free) < 5 for p in published_free), (published_free, free)


def test_a_budget_pause_alone_keeps_healthy_at_1_and_says_when_it_resumes(
    tmp_path: Path, x_server: FakeXServer, s3, aws_env: MotoServer
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    cloudwatch = boto3.client("cloudwatch", endpoint_url=aws_env.url, region_name="us-east-1")
    config = write_config(
        tmp_path,
        x_server.url,
        s3_endpoint=aws_env.url,
        max_seconds=0.5,
        extra="[budget]\nposts_per_day = 100\n" + cloudwatch_toml(aws_env.url),
    )
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        x_server.count = 300
        wait_until(lambda: 1.0 in metric_values(cloudwatch, "BudgetPaused", "Maximum"), 30, 0.5)
        status = wait_until(lambda: (s := read_status(tmp_path))["connection"] == "paused" and s)
        updated = status["updated_at"]
        wait_until(lambda: read_status(tmp_path)["updated_at"] > updated, 10, 0.2)
        time.sleep(3)  # a few more samples published while paused
        status = read_status(tmp_path)
    finally:
        assert collector.stop() == 0
    # planned: degraded in status, yet not a reason for twittersnake-unhealthy
    assert status["health"] == "degraded" and status["health_conditions"] == ["budget"]
    assert status["health_reason"].startswith("budget reached: ")
    assert set(metric_values(cloudwatch, "Healthy", "Minimum")) == {1.0}
    tomorrow = datetime.now(UTC).date() + timedelta(days=1)
    assert status["next_attempt_at"] == f"{tomorrow.isoformat()}T00:00:00Z"


def test_a_cloudwatch_outage_keeps_samples_and_drops_the_oldest_first(
    aws_env: MotoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "collector.telemetry.cloudwatch")
    proxy = OutageProxy(aws_env.port).start()
    cfg = parse_config(
        {
            "collector_id": "outage-1",
            "x": {"rules": [{"value": "python", "tag": "python"}]},
            "s3": {"bucket": BUCKET},
            "cloudwatch": {"enabled": True, "endpoint_url": proxy.url},
        }
    )
    metrics = Metrics()
    start = time.time() - 600
    ticks = iter(range(100))
    sample_times: list[float] = []

    def clock() -> float:
        sample_times.append(start + 60 * next(ticks))
        return sample_times[-1]

    posts = iter(range(10, 1000, 10))  # 10, 20, 30... received by each sample
    publisher = CloudWatchPublisher(
        "outage-1",
        lambda: {"posts_received": next(posts), "connection": "connected"},
        metrics,
        make_client(cfg),
        clock=clock,
    )
    publisher.max_samples = 3
    try:
        proxy.down = True
        for _ in range(5):
            publisher.sample()
            assert publisher.publish() is False
        assert proxy.refused >= 5
        assert metrics.snapshot()["cloudwatch_dropped"] == 2  # 5 samples, 3 kept
        assert "endpoint URL" in metrics.snapshot()["cloudwatch_last_error"]
        warnings = [r for r in caplog.records if "PutMetricData failed" in r.getMessage()]
        assert len(warnings) == 1  # the first failure; then at most one every 5 minutes
        proxy.down = False
        assert publisher.publish() is True
        assert metrics.snapshot()["cloudwatch_last_error"] is None
        assert any("accepts metrics again" in r.getMessage() for r in caplog.records)
    finally:
        proxy.stop()

    cloudwatch = boto3.client("cloudwatch", endpoint_url=aws_env.url, region_name="us-east-1")
    stats = cloudwatch.get_metric_statistics(
        Namespace="TwitterSnake",
        MetricName="PostsReceived",
        Dimensions=[{"Name": "CollectorId", "Value": "outage-1"}],
        StartTime=datetime.fromtimestamp(start - 60, UTC),
        EndTime=datetime.now(UTC),
        Period=60,
        Statistics=["Sum"],
    )["Datapoints"]
    # the two oldest samples were dropped; the three kept arrive with their own minutes
    kept = sorted((p["Timestamp"].timestamp(), p["Sum"]) for p in stats)
    assert [value for _, value in kept] == [10.0, 10.0, 10.0]
    for (bucket, _), sampled in zip(kept, sample_times[2:5], strict=True):
        assert bucket <= sampled < bucket + 60


def collector_policy(*, put_object: bool = True, put_metric_data: bool = True) -> dict:
    """What the collector calls: HeadBucket, HeadObject, PutObject, PutMetricData (IamMoto)."""
    statements = [
        {
            "Effect": "Allow",
            "Action": ["s3:ListBucket", "s3:HeadBucket"],
            "Resource": f"arn:aws:s3:::{BUCKET}",
        },
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", *(["s3:PutObject"] if put_object else [])],
            "Resource": f"arn:aws:s3:::{BUCKET}/*",
        },
    ]
    if put_metric_data:
        # the IAM action AWS checks (tests/fakes/moto_iam_server.py makes moto check it too)
        statements.append(
            {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"}
        )
    return {"Version": "2012-10-17", "Statement": statements}


def start_collector(
    tmp: Path, x: FakeXServer, iam: IamMoto, key: AccessKey, interval: float, grace: float = 120
):
    config = write_config(
        tmp,
        x.url,
        s3_endpoint=iam.url,
        max_seconds=0.5,
        extra=cloudwatch_toml(iam.url, interval=interval),
    )
    text = config.read_text().replace("[s3]\n", f"[s3]\nfailing_after_seconds = {grace}\n", 1)
    config.write_text(text)
    return CollectorProcess(config, env=iam.env(key))


def test_cloudwatch_refusing_every_call_costs_no_post_and_no_time(
    tmp_path: Path, x_server: FakeXServer, moto_iam: IamMoto
) -> None:
    s3 = moto_iam.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    # the collector's user may write to S3 but not to CloudWatch: every PutMetricData is refused
    key = moto_iam.create_user("collector", collector_policy(put_metric_data=False))
    collector = start_collector(tmp_path, x_server, moto_iam, key, interval=0.2)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        wait_until(lambda: read_status(tmp_path).get("cloudwatch_last_error"), 20)
        x_server.count = 300
        sent_at = time.monotonic()
        wait_until(lambda: len(s3_post_ids(s3)) >= 300, 40, 0.2)
        shipped_in = time.monotonic() - sent_at
        status = read_status(tmp_path)
    finally:
        assert collector.stop() == 0
    assert sorted(s3_post_ids(s3)) == sorted(x_server.sent_ids)
    # 300 posts as fast as the stand-in sends, sealed every 0.5 s: CloudWatch's refusals (one
    # every 0.2 s) hold nothing up.
    assert shipped_in < 15, shipped_in
    assert status["connection"] == "connected" and status["upload_errors"] == 0
    assert "AccessDenied" in status["cloudwatch_last_error"], status["cloudwatch_last_error"]
    assert key.access_key_id not in collector.log
    warnings = re.findall(r"CloudWatch PutMetricData failed", collector.log)
    assert len(warnings) == 1, collector.log[-3000:]


def test_uploads_refused_by_s3_show_in_the_metrics_and_nothing_is_lost(
    tmp_path: Path, x_server: FakeXServer, moto_iam: IamMoto
) -> None:
    s3, cloudwatch, iam = (moto_iam.client(name) for name in ("s3", "cloudwatch", "iam"))
    s3.create_bucket(Bucket=BUCKET)
    # the collector's user lacks s3:PutObject: S3 answers every upload 403 AccessDenied
    key = moto_iam.create_user("collector", collector_policy(put_object=False))
    grace = 10  # s3.failing_after_seconds: refusals this long turn the health to failing
    collector = start_collector(tmp_path, x_server, moto_iam, key, interval=1, grace=grace)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        assert 0.0 not in metric_values(cloudwatch, "Healthy", "Minimum")
        x_server.count = 50
        wait_until(lambda: read_status(tmp_path).get("upload_errors", 0) >= 1, 20)
        refused_at = time.monotonic()
        # the collector's health: degraded at the first refusal, failing after the grace; Healthy
        # is 0 in CloudWatch from the first sample after the refusal, well within the grace
        wait_until(lambda: 0.0 in metric_values(cloudwatch, "Healthy", "Minimum"), 30, 0.2)
        assert time.monotonic() - refused_at < grace, time.monotonic() - refused_at
        wait_until(lambda: read_status(tmp_path).get("health") == "failing", grace + 20)
        assert "AccessDenied" in read_status(tmp_path)["health_reason"]
        # the refused files wait in the spool, and CloudWatch hears about them
        wait_until(lambda: sum(metric_values(cloudwatch, "UploadErrors", "Sum")) >= 2, 30, 0.5)
        wait_until(lambda: max(metric_values(cloudwatch, "FilesPending", "Maximum")) >= 1, 20)
        wait_until(
            lambda: max(metric_values(cloudwatch, "OldestPendingFileAge", "Maximum")) >= 2, 20
        )
        status = read_status(tmp_path)
        assert "AccessDenied" in (status["last_error"] or ""), status
        assert s3_post_ids(s3) == []
        iam.put_user_policy(
            UserName="collector",
            PolicyName="collector-inline",
            PolicyDocument=json.dumps(collector_policy()),
        )
        wait_until(lambda: len(s3_post_ids(s3)) >= 50, 60, 0.5)
        wait_until(lambda: read_status(tmp_path).get("health") == "healthy", 20)
        # the latest sample (by the second) says healthy again
        wait_until(lambda: metric_values(cloudwatch, "Healthy", "Minimum", period=1)[-1:] == [1.0])
    finally:
        assert collector.stop() == 0
    assert sorted(s3_post_ids(s3)) == sorted(x_server.sent_ids)


def test_the_running_collector_publishes_a_failed_and_then_a_successful_compliance_run(
    tmp_path: Path, x_server: FakeXServer, s3, aws_env: MotoServer
) -> None:
    """`collector compliance` (another process, as its timer runs it) records its run in the
    spool; the running collector reads it into status.json and CloudWatch."""
    from collector.analysis import compliance

    s3.create_bucket(Bucket=BUCKET)
    cloudwatch = boto3.client("cloudwatch", endpoint_url=aws_env.url, region_name="us-east-1")
    config = write_config(
        tmp_path, x_server.url, s3_endpoint=aws_env.url, max_seconds=0.5,
        extra=cloudwatch_toml(aws_env.url),
    )  # fmt: skip
    argv = ["--config", str(config), "--since", "1h", "--poll-seconds", "0", "--no-progress"]
    argv += ["--cache-dir", str(tmp_path / "cache")]
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        x_server.count = 30
        wait_until(lambda: len(s3_post_ids(s3)) >= 30, 30, 0.5)
        wait_until(lambda: metric_values(cloudwatch, "ComplianceRunFailed", "Maximum", period=1))
        assert read_status(tmp_path)["compliance_last_run_ok"] is None  # no run yet
        assert metric_values(cloudwatch, "ComplianceRunFailed", "Maximum", period=1)[-1] == 0.0

        x_server.control({"compliance_fail_next": "Job failed: storage unavailable"})
        assert compliance.main(argv) == 1
        wait_until(lambda: read_status(tmp_path).get("compliance_last_run_ok") is False)
        status = read_status(tmp_path)
        assert status["compliance_last_error"].endswith("Job failed: storage unavailable")
        assert status["compliance_last_ok_at"] is None
        wait_until(
            lambda: (
                metric_values(cloudwatch, "ComplianceRunFailed", "Maximum", period=1)[-1:] == [1.0]
            )
        )

        assert compliance.main(argv) == 0  # resumes: a new job for the one X failed
        wait_until(lambda: read_status(tmp_path).get("compliance_last_run_ok") is True)
        status = read_status(tmp_path)
        assert status["compliance_last_ok_at"] == status["compliance_last_run_at"]
        assert status["compliance_last_error"] is None and status["compliance_age_seconds"] < 60
        wait_until(
            lambda: (
                metric_values(cloudwatch, "ComplianceRunFailed", "Maximum", period=1)[-1:] == [0.0]
            )
        )
        ages = metric_values(cloudwatch, "ComplianceRunAge", "Maximum", period=1)
        assert ages and ages[-1] < 60

        ok_at = status["compliance_last_ok_at"]
        x_server.control({"compliance_fail_next": "Job failed: storage unavailable"})
        assert compliance.main(argv) == 1  # a failure after a success keeps when that was
        wait_until(lambda: read_status(tmp_path).get("compliance_last_run_ok") is False)
        assert read_status(tmp_path)["compliance_last_ok_at"] == ok_at
    finally:
        assert collector.stop() == 0, collector.log


def test_the_alarms_read_metrics_the_collector_declares() -> None:
    """roles/alerts names metrics and the namespace again: they must be telemetry.metrics's."""
    role = Path(__file__).resolve().parents[2] / "roles" / "alerts"
    alerts_vars = yaml.safe_load((role / "vars" / "main.yml").read_text())
    assert alerts_vars["_alerts_namespace"] == NAMESPACE
    published = {metric.cloudwatch for metric in PUBLISHED}
    assert published == EXPECTED_METRICS
    alarmed = {alarm["metric_name"] for alarm in alerts_vars["_alerts_collector_alarms"]}
    assert alarmed <= published, alarmed - published
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
    assert set(specs["argument_specs"]["main"]["options"]) == set(defaults)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP port that accepts connections and never answers (a hung CloudWatch endpoint)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()
    for sock in accepted:
        sock.close()


def test_a_cloudwatch_that_never_answers_holds_up_neither_uploads_nor_the_stop(
    tmp_path: Path, x_server: FakeXServer, s3, aws_env: MotoServer, silent_endpoint: str
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(
        tmp_path,
        x_server.url,
        s3_endpoint=aws_env.url,
        max_seconds=0.5,
        extra=cloudwatch_toml(silent_endpoint, interval=0.5),
    )
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        x_server.count = 200
        wait_until(lambda: len(s3_post_ids(s3)) >= 200, 40, 0.2)
    finally:
        asked_at = time.monotonic()
        assert collector.stop() == 0
        stopped_in = time.monotonic() - asked_at
    assert sorted(s3_post_ids(s3)) == sorted(x_server.sent_ids)
    # the publisher is stuck in a read (10 s timeout, 2 attempts); the stop waits at most 3 s
    # for its last sample
    assert stopped_in < 15, stopped_in
    assert "everything received was uploaded" in collector.log


def test_with_the_defaults_every_stop_is_mailed_within_15_minutes() -> None:
    """The alerts' promise, from the settings the roles deploy: a stop of collection (X refusing,
    token revoked, collector or instance dead) or of shipping (S3 refusing, uploads hung) reaches
    ALARM within 15 minutes. Worst case per alarm: the time until the collector can see the
    problem, then the alarm's minutes, plus one minute for the sample that still carried the
    good value and one for CloudWatch's evaluation (docs/operations.md "Alerts": how soon you
    hear)."""
    roles = Path(__file__).resolve().parents[2] / "roles"
    alerts = yaml.safe_load((roles / "alerts" / "defaults" / "main.yml").read_text())
    collector = yaml.safe_load((roles / "collector" / "defaults" / "main.yml").read_text())
    rotate_minutes = collector["collector_rotate_max_seconds"] / 60  # a refused PUT needs a file
    unhealthy = alerts["alerts_unhealthy_minutes"]
    slack = 2  # the last good sample's minute + CloudWatch's evaluation
    worst = {
        "X stream down or refused": STREAM_DEGRADED_AFTER / 60 + unhealthy + slack,
        "collector or instance dead (no metrics)": unhealthy + slack,
        "S3 refusing uploads": rotate_minutes + unhealthy + slack,
        "uploads hung": rotate_minutes + alerts["alerts_pending_age_minutes"] + slack,
    }
    assert {cause: minutes for cause, minutes in worst.items() if minutes > 15} == {}
