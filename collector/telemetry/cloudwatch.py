"""Metrics to Amazon CloudWatch: one batched PutMetricData per interval (60 s), on its own thread.

Every interval the publisher takes the status snapshot (what status.json holds), turns each
metric of telemetry.metrics.PUBLISHED into a MetricDatum (namespace TwitterSnake, dimension
CollectorId; a COUNTER as its increase since the previous sample, a GAUGE as it is) and sends
all samples not yet accepted in one PutMetricData call.

Failure never reaches the data path: the thread only reads the snapshot. A refused or
unreachable CloudWatch is logged (the first time, then at most every ERROR_LOG_SECONDS),
shown as `cloudwatch_last_error` in status.json and retried at the next interval with the
samples kept so far. The backlog is bounded: at most MAX_DATUMS_PER_CALL datums (AWS's limit
for one PutMetricData request); the oldest sample is dropped first and counted in
`cloudwatch_dropped`. CloudWatch accepts timestamps up to two weeks old, so an outage shorter
than the backlog (about 100 minutes) loses nothing.

AWS: https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html
("Each request ... can contain no more than 1000 different metrics", payload at most 1 MB).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from collector.telemetry.metrics import (
    CLOUDWATCH_DROPPED,
    CLOUDWATCH_LAST_ERROR,
    COUNTER,
    PUBLISHED,
    Metric,
    Metrics,
)
from collector.telemetry.redact import SECRETS

log = logging.getLogger(__name__)

NAMESPACE = "TwitterSnake"
DIMENSION = "CollectorId"
MAX_DATUMS_PER_CALL = 1000
ERROR_LOG_SECONDS = 300.0
FINAL_PUBLISH_SECONDS = 3.0  # the last sample at stop; never holds the exit longer


def make_client(cfg):
    """A CloudWatch client with the collector's key (collector.sink.s3.aws_session); short
    timeouts: a hung endpoint delays only the next sample, never the collector."""
    config = BotoConfig(
        connect_timeout=3,
        read_timeout=10,
        retries={"max_attempts": 2, "mode": "standard"},
        # A whole backlog is at most ~150 KB; botocore would gzip it above 10 KB, which moto (the
        # sandbox's AWS) cannot verify the signature of.
        disable_request_compression=True,
    )
    from collector.sink.s3 import aws_session

    client = aws_session(cfg).client(
        "cloudwatch",
        region_name=cfg.cloudwatch.region or None,
        endpoint_url=cfg.cloudwatch.endpoint_url or None,
        config=config,
    )
    SECRETS.add_aws_credentials(client)
    return client


class CloudWatchPublisher:
    """Samples `snapshot()` every `interval` seconds and publishes the samples in one call.

    snapshot: returns the status dict (collector.telemetry.status.StatusReporter.snapshot).
    metrics: where cloudwatch_dropped / cloudwatch_last_error are recorded for status.json.
    metrics_published: the declared metrics to send (default collector.telemetry.metrics.PUBLISHED).
    """

    def __init__(
        self,
        collector_id: str,
        snapshot: Callable[[], dict],
        metrics: Metrics,
        client,
        *,
        interval: float = 60.0,
        published: tuple[Metric, ...] = PUBLISHED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # clock: the samples' timestamps (epoch seconds); rate limits use time.monotonic()
        self.snapshot = snapshot
        self.metrics = metrics
        self.client = client
        self.interval = interval
        self.published = published
        self.clock = clock
        self.dimensions = [{"Name": DIMENSION, "Value": collector_id}]
        self.max_samples = max(1, MAX_DATUMS_PER_CALL // max(1, len(published)))
        self._backlog: deque[list[dict]] = deque()
        self._totals: dict[str, float] = {}
        self._failing_since: float | None = None
        self._last_error_log = 0.0  # time.monotonic() of the last warning
        self._failures = 0
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Add one sample (one datum per published metric) to the backlog."""
        status = self.snapshot()
        stamp = datetime.fromtimestamp(self.clock(), UTC)
        datums = []
        for metric in self.published:
            value = metric.value(status)
            if value is None:
                continue  # unknown (e.g. statvfs failed): no datum rather than a false 0
            if metric.kind == COUNTER:
                # A counter restarts at 0 with the process; an increase is never negative.
                value, self._totals[metric.name] = (
                    max(0.0, value - self._totals.get(metric.name, 0.0)),
                    value,
                )
            datums.append(
                {
                    "MetricName": metric.cloudwatch,
                    "Dimensions": self.dimensions,
                    "Timestamp": stamp,
                    "Value": float(value),
                    "Unit": metric.unit,
                }
            )
        self._backlog.append(datums)
        while len(self._backlog) > self.max_samples:
            self._backlog.popleft()
            self.metrics.incr(CLOUDWATCH_DROPPED)

    def publish(self) -> bool:
        """Send the whole backlog in one PutMetricData; True when CloudWatch accepted it."""
        if not self._backlog:
            return True
        batch = [datum for sample in self._backlog for datum in sample]
        try:
            self.client.put_metric_data(Namespace=NAMESPACE, MetricData=batch)
        except (ClientError, BotoCoreError, OSError) as exc:
            self._failed(exc)
            return False
        sent = len(self._backlog)
        self._backlog.clear()
        if self._failing_since is not None:
            log.info(
                "CloudWatch accepts metrics again after %.0f s and %d failed call(s); "
                "%d sample(s) published",
                time.monotonic() - self._failing_since,
                self._failures,
                sent,
            )
            self._failing_since, self._failures = None, 0
            self.metrics.set(CLOUDWATCH_LAST_ERROR, None)
        return True

    def _failed(self, exc: BaseException) -> None:
        message = SECRETS.one_line(exc)
        now = time.monotonic()
        self._failures += 1
        self.metrics.set(CLOUDWATCH_LAST_ERROR, message)
        if self._failing_since is None:
            self._failing_since = now
        if self._failures == 1 or now - self._last_error_log >= ERROR_LOG_SECONDS:
            self._last_error_log = now
            log.warning(
                "CloudWatch PutMetricData failed (%d time(s) so far, %d sample(s) kept, "
                "retried every %.0f s; collection and uploads are not affected): %s",
                self._failures,
                len(self._backlog),
                self.interval,
                message,
            )

    def _tick(self) -> None:
        try:
            self.sample()
            self.publish()
        except Exception:  # a bug here must not end the thread: metrics would stop silently
            log.exception("CloudWatch publisher error")

    def start(self, stop: threading.Event) -> threading.Thread:
        """Publish every `interval` until `stop` is set, then publish a last sample."""

        def loop() -> None:
            # A fixed schedule, not `interval` after the previous call: a slow call must not
            # shift later samples, or some minutes would get two samples and others none.
            next_at = time.monotonic() + self.interval
            while not stop.wait(max(0.0, next_at - time.monotonic())):
                self._tick()
                next_at += self.interval
                if next_at < time.monotonic():  # calls slower than the interval: skip ahead
                    next_at = time.monotonic() + self.interval
            self._tick()

        self._thread = threading.Thread(target=loop, name="cloudwatch", daemon=True)
        self._thread.start()
        return self._thread

    def join(self, timeout: float = FINAL_PUBLISH_SECONDS) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
