"""The collector's metrics: declared once (name, unit, kind), counted by every thread.

DECLARED is the one list that status.json, the progress line and CloudWatch read, so the
three cannot drift apart. Each metric is a module-level handle (POSTS_RECEIVED...) that the code
passes to Metrics.incr / Metrics.set, so a misspelt name fails at import; the status fields
that are not metrics (LAST_ERROR...) are handles too (FIELDS). Adding a counter to status.json
is one handle and one line in DECLARED; give it `cloudwatch=` to publish it and `progress=` to
show it in the 10 s progress line.

Units are CloudWatch's StandardUnit names
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_MetricDatum.html).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from collector.telemetry.health import BUDGET_CONDITION

COUNTER = "counter"  # a running total since the process started; CloudWatch gets the increase
GAUGE = "gauge"  # a current value (a level, a 0/1 state), shown and published as it is


def _connected(status: dict) -> int:
    return int(status.get("connection") == "connected")


def _healthy(status: dict) -> int:
    # The status snapshot's health (telemetry.health: "healthy"|"degraded"|"failing"). Only
    # "healthy" is 1: a collector that stays degraded should alarm too (the alarm's minutes
    # are the grace); a snapshot without a health is not healthy. A pause by the budget alone
    # is planned: degraded in status, 1 here (BudgetPaused and its alarm tell it).
    health = status.get("health")
    return int(
        health == "healthy"
        or (health == "degraded" and status.get("health_conditions") == [BUDGET_CONDITION])
    )


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


# Each metric is a handle the code passes to Metrics.incr / Metrics.set: a misspelt name
# fails at import (and in mypy), not in a dashboard weeks later.
POSTS_RECEIVED = Metric(
    "posts_received", "Count", COUNTER, cloudwatch="PostsReceived", progress="posts"
)
BYTES_RECEIVED = Metric("bytes_received", "Bytes", COUNTER, progress="received")
ERROR_MESSAGES = Metric("error_messages", "Count", COUNTER)
QUARANTINED_LINES = Metric("quarantined_lines", "Count", COUNTER, progress="quarantined")
RECONNECTS = Metric("reconnects", "Count", COUNTER, cloudwatch="Reconnects", progress="reconnects")
CONNECTS = Metric("connects", "Count", COUNTER)
KEEP_ALIVES = Metric("keep_alives", "Count", COUNTER)
HTTP_ERRORS = Metric("http_errors", "Count", COUNTER)
FILES_SEALED = Metric("files_sealed", "Count", COUNTER, progress="sealed")
RECORDS_SEALED = Metric("records_sealed", "Count", COUNTER)
SPOOL_WRITE_ERRORS = Metric("spool_write_errors", "Count", COUNTER)
# lines that arrived after the stop
DROPPED_AFTER_CLOSE = Metric("dropped_after_close", "Count", COUNTER)
FILES_COMPRESSED = Metric("files_compressed", "Count", COUNTER)
COMPRESS_ERRORS = Metric("compress_errors", "Count", COUNTER)
FILES_UPLOADED = Metric("files_uploaded", "Count", COUNTER, progress="uploaded")
BYTES_UPLOADED = Metric("bytes_uploaded", "Bytes", COUNTER, cloudwatch="BytesUploaded")
UPLOAD_ERRORS = Metric("upload_errors", "Count", COUNTER, cloudwatch="UploadErrors")
PENDING_FILES = Metric(
    "pending_files", "Count", GAUGE, cloudwatch="FilesPending", progress="pending"
)
OLDEST_PENDING_SECONDS = Metric(
    "oldest_pending_seconds", "Seconds", GAUGE, cloudwatch="OldestPendingFileAge"
)
SPOOL_DISK_FREE_PERCENT = Metric(
    "spool_disk_free_percent", "Percent", GAUGE, cloudwatch="SpoolDiskFree"
)
CLOUDWATCH_DROPPED = Metric("cloudwatch_dropped", "Count", COUNTER)
# gap repair (collector.source.repair): posts search returned, spans waiting for repair
REPAIR_POSTS_FETCHED = Metric("repair_posts_fetched", "Count", COUNTER, progress="repaired")
REPAIR_PENDING = Metric("repair_pending", "Count", GAUGE)
CONNECTED_METRIC = Metric("connected", "None", GAUGE, cloudwatch="Connected", read=_connected)
HEALTHY_METRIC = Metric("healthy", "None", GAUGE, cloudwatch="Healthy", read=_healthy)
# What X bills (collector.telemetry.ledger): today's unique posts, the cycle's USD so far
# and at its end at the last hour's rate, and 1 while the budget holds the stream closed.
BILLABLE_POSTS_TODAY = Metric(
    "billable_posts_today",
    "Count",
    GAUGE,
    cloudwatch="BillablePosts",
    read=_figure("billable_posts_today"),
)
SPEND_USD_CYCLE = Metric(
    "spend_usd_cycle",
    "None",
    GAUGE,
    cloudwatch="EstimatedSpendUSD",
    read=_figure("spend_usd_cycle"),
)
SPEND_USD_CYCLE_FORECAST = Metric(
    "spend_usd_cycle_forecast",
    "None",
    GAUGE,
    cloudwatch="EstimatedSpendUSDForecast",
    read=_figure("spend_usd_cycle_forecast"),
)
BUDGET_PAUSED = Metric(
    "budget_paused", "None", GAUGE, cloudwatch="BudgetPaused", read=_budget_paused
)
# X's batch compliance (collector.analysis.compliance, run by its timers): the last run
# failed (0/1), and the seconds since the last run that succeeded (since the collector
# started when none ever did), so a failing or overdue run alarms (roles/alerts).
COMPLIANCE_RUN_FAILED = Metric(
    "compliance_run_failed",
    "None",
    GAUGE,
    cloudwatch="ComplianceRunFailed",
    read=_compliance_failed,
)
COMPLIANCE_AGE_SECONDS = Metric(
    "compliance_age_seconds",
    "Seconds",
    GAUGE,
    cloudwatch="ComplianceRunAge",
    read=_figure("compliance_age_seconds"),
)

DECLARED: tuple[Metric, ...] = (
    POSTS_RECEIVED,
    BYTES_RECEIVED,
    ERROR_MESSAGES,
    QUARANTINED_LINES,
    RECONNECTS,
    CONNECTS,
    KEEP_ALIVES,
    HTTP_ERRORS,
    FILES_SEALED,
    RECORDS_SEALED,
    SPOOL_WRITE_ERRORS,
    DROPPED_AFTER_CLOSE,
    FILES_COMPRESSED,
    COMPRESS_ERRORS,
    FILES_UPLOADED,
    BYTES_UPLOADED,
    UPLOAD_ERRORS,
    PENDING_FILES,
    OLDEST_PENDING_SECONDS,
    SPOOL_DISK_FREE_PERCENT,
    CLOUDWATCH_DROPPED,
    REPAIR_POSTS_FETCHED,
    REPAIR_PENDING,
    CONNECTED_METRIC,
    HEALTHY_METRIC,
    BILLABLE_POSTS_TODAY,
    SPEND_USD_CYCLE,
    SPEND_USD_CYCLE_FORECAST,
    BUDGET_PAUSED,
    COMPLIANCE_RUN_FAILED,
    COMPLIANCE_AGE_SECONDS,
)
PUBLISHED = tuple(m for m in DECLARED if m.cloudwatch)


@dataclass(frozen=True)
class Field:
    """A status.json field the code sets that is not a metric (a text, a time, a list)."""

    name: str


CONNECTION = Field("connection")  # connecting, connected, disconnected, paused, closed
CONNECTION_SINCE = Field("connection_since")  # epoch seconds of the last change
STREAM_URL = Field("stream_url")
X_API_VERSION = Field("x_api_version")  # X's api-version header of the last answer
LAST_POST_AT = Field("last_post_at")  # epoch seconds
LAST_ERROR = Field("last_error")  # the last problem, one line (its time: Metrics.set_at)
LAST_STREAM_ERROR = Field("last_stream_error")
LAST_UPLOAD_KEY = Field("last_upload_key")
LAST_UPLOAD_AT = Field("last_upload_at")  # ISO 8601
CLOUDWATCH_LAST_ERROR = Field("cloudwatch_last_error")
REPAIR_LAST = Field("repair_last")  # the last gap repair's outcome
REPAIR_NOT_REPAIRABLE = Field("repair_not_repairable")  # "rule: reason" per rule search refused
X_ACCOUNT_STATE = Field("x_account_state")  # X's account-level refusal (source.account), or None
NEXT_ATTEMPT_AT = Field("next_attempt_at")  # ISO 8601: when the stream is tried again
X_PROJECT_USAGE = Field("x_project_usage")  # posts X counted this cycle (GET /2/usage/tweets)
X_PROJECT_CAP = Field("x_project_cap")  # the project's cap X reports
FIELDS: tuple[Field, ...] = (
    CONNECTION,
    CONNECTION_SINCE,
    STREAM_URL,
    X_API_VERSION,
    LAST_POST_AT,
    LAST_ERROR,
    LAST_STREAM_ERROR,
    LAST_UPLOAD_KEY,
    LAST_UPLOAD_AT,
    CLOUDWATCH_LAST_ERROR,
    REPAIR_LAST,
    REPAIR_NOT_REPAIRABLE,
    X_ACCOUNT_STATE,
    NEXT_ATTEMPT_AT,
    X_PROJECT_USAGE,
    X_PROJECT_CAP,
)


class Metrics:
    """Thread-safe counters and last-seen values, read as one consistent snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._values: dict[str, object] = {}
        self._set_at: dict[str, float] = {}

    def incr(self, metric: Metric, amount: int = 1) -> None:
        with self._lock:
            self._counters[metric.name] += amount

    def set(self, handle: Metric | Field, value: object) -> None:
        with self._lock:
            self._values[handle.name] = value
            self._set_at[handle.name] = time.time()

    def set_at(self, handle: Metric | Field) -> float | None:
        """When `handle` was last set (epoch seconds), None if never."""
        with self._lock:
            return self._set_at.get(handle.name)

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            return {**dict(self._counters), **self._values}
