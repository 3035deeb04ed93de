"""The collector's metrics: declared once (name, unit, kind), counted by every thread.

DECLARED is the one list that status.json, the progress line and CloudWatch read, so the
three cannot drift apart. Adding a counter to status.json is one line in DECLARED; give it
`cloudwatch=` to publish it and `progress=` to show it in the 10 s progress line.

Units are CloudWatch's StandardUnit names
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricDatum.html).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

COUNTER = "counter"  # a running total since the process started; CloudWatch gets the increase
GAUGE = "gauge"  # a current value (a level, a 0/1 state), shown and published as it is


def _connected(status: dict) -> int:
    return int(status.get("connection") == "connected")


def _healthy(status: dict) -> int:
    # The status snapshot's health (telemetry.health: "healthy"|"degraded"|"failing"). Only
    # "healthy" is 1: a collector that stays degraded should alarm too (the alarm's minutes
    # are the grace); a snapshot without a health is not healthy.
    return int(status.get("health") == "healthy")


def _figure(name: str) -> Callable[[dict], float | None]:
    """A reader of a spend figure the billing ledger puts in the snapshot (None without one)."""

    def read(status: dict) -> float | None:
        value = status.get(name)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    return read


def _budget_paused(status: dict) -> int:
    return int(status.get("connection") == "paused")


def _compliance_failed(status: dict) -> int:
    # 1 while the last `collector compliance` run failed (until one succeeds); 0 otherwise,
    # also before the first run (its age says when one is due).
    return int(status.get("compliance_last_run_ok") is False)


@dataclass(frozen=True)
class Metric:
    """One declared metric.

    name: key in status.json and in Metrics (snake_case).
    unit: CloudWatch StandardUnit ("Count", "Bytes", "Seconds", "Percent", "None").
    kind: COUNTER or GAUGE.
    cloudwatch: MetricName in namespace TwitterSnake ("" = not published).
    progress: label in the progress line ("" = not shown); Bytes are shown as MB.
    read: how to read the value from a status snapshot (None = status[name]); a metric with
        a reader is derived from other fields and is not written to status.json again.
    """

    name: str
    unit: str
    kind: str
    cloudwatch: str = ""
    progress: str = ""
    read: Callable[[dict], float | None] | None = None

    @property
    def in_status(self) -> bool:
        return self.read is None

    def value(self, status: dict) -> float | None:
        """The value in a status snapshot; None when the snapshot has no number for it."""
        if self.read is not None:
            return self.read(status)
        value = status.get(self.name)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None


DECLARED: tuple[Metric, ...] = (
    Metric("posts_received", "Count", COUNTER, cloudwatch="PostsReceived", progress="posts"),
    Metric("bytes_received", "Bytes", COUNTER, progress="received"),
    Metric("error_messages", "Count", COUNTER),
    Metric("quarantined_lines", "Count", COUNTER, progress="quarantined"),
    Metric("reconnects", "Count", COUNTER, cloudwatch="Reconnects", progress="reconnects"),
    Metric("connects", "Count", COUNTER),
    Metric("keep_alives", "Count", COUNTER),
    Metric("http_errors", "Count", COUNTER),
    Metric("files_sealed", "Count", COUNTER, progress="sealed"),
    Metric("records_sealed", "Count", COUNTER),
    Metric("spool_write_errors", "Count", COUNTER),
    Metric("dropped_after_close", "Count", COUNTER),  # lines that arrived after the stop
    Metric("files_compressed", "Count", COUNTER),
    Metric("compress_errors", "Count", COUNTER),
    Metric("files_uploaded", "Count", COUNTER, progress="uploaded"),
    Metric("bytes_uploaded", "Bytes", COUNTER, cloudwatch="BytesUploaded"),
    Metric("upload_errors", "Count", COUNTER, cloudwatch="UploadErrors"),
    Metric("pending_files", "Count", GAUGE, cloudwatch="FilesPending", progress="pending"),
    Metric("oldest_pending_seconds", "Seconds", GAUGE, cloudwatch="OldestPendingFileAge"),
    Metric("spool_disk_free_percent", "Percent", GAUGE, cloudwatch="SpoolDiskFree"),
    Metric("cloudwatch_dropped", "Count", COUNTER),
    # gap repair (collector.source.repair): posts search returned, spans waiting for repair
    Metric("repair_posts_fetched", "Count", COUNTER, progress="repaired"),
    Metric("repair_pending", "Count", GAUGE),
    Metric("connected", "None", GAUGE, cloudwatch="Connected", read=_connected),
    Metric("healthy", "None", GAUGE, cloudwatch="Healthy", read=_healthy),
    # What X bills (collector.telemetry.ledger): today's unique posts, the cycle's USD so far
    # and at its end at the last hour's rate, and 1 while the budget holds the stream closed.
    Metric(
        "billable_posts_today",
        "Count",
        GAUGE,
        cloudwatch="BillablePosts",
        read=_figure("billable_posts_today"),
    ),
    Metric(
        "spend_usd_cycle",
        "None",
        GAUGE,
        cloudwatch="EstimatedSpendUSD",
        read=_figure("spend_usd_cycle"),
    ),
    Metric(
        "spend_usd_cycle_forecast",
        "None",
        GAUGE,
        cloudwatch="EstimatedSpendUSDForecast",
        read=_figure("spend_usd_cycle_forecast"),
    ),
    Metric("budget_paused", "None", GAUGE, cloudwatch="BudgetPaused", read=_budget_paused),
    # X's batch compliance (collector.analysis.compliance, run by its timers): the last run
    # failed (0/1), and the seconds since the last run that succeeded (since the collector
    # started when none ever did), so a failing or overdue run alarms (roles/alerts).
    Metric(
        "compliance_run_failed",
        "None",
        GAUGE,
        cloudwatch="ComplianceRunFailed",
        read=_compliance_failed,
    ),
    Metric(
        "compliance_age_seconds",
        "Seconds",
        GAUGE,
        cloudwatch="ComplianceRunAge",
        read=_figure("compliance_age_seconds"),
    ),
)
PUBLISHED = tuple(m for m in DECLARED if m.cloudwatch)


class Metrics:
    """Thread-safe counters and last-seen values, read as one consistent snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._values: dict[str, object] = {}
        self._set_at: dict[str, float] = {}

    def incr(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def set(self, name: str, value: object) -> None:
        with self._lock:
            self._values[name] = value
            self._set_at[name] = time.time()

    def set_at(self, name: str) -> float | None:
        """When `name` was last set (epoch seconds), None if never."""
        with self._lock:
            return self._set_at.get(name)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {**dict(self._counters), **self._values}
