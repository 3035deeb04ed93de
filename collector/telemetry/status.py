"""status.json (rewritten atomically every few seconds), the 10 s progress line, `collector status`.

status.json fields (a contract for `collector status`, the report and operators):
    pid, collector_id, state (running|stopping|stopped|exited), started_at, updated_at (ISO UTC),
    health (healthy|degraded|failing), health_reason (null when healthy; see telemetry.health),
    health_conditions (the names of the conditions behind health: stream, s3, spool, budget...),
    connection (connecting|connected|disconnected), connection_since (ISO), stream_url,
    x_api_version (X's `api-version` header of the last stream answer),
    x_account_state (X's account-level refusal in force: credits_depleted, spending_limit,
    monthly_cap, too_many_connections; null otherwise: collector.source.account),
    next_attempt_at (ISO: when the stream reader connects next while not connected; null once
    connected), x_project_usage and x_project_cap (posts X counted this billing cycle and its
    cap, from GET /2/usage/tweets at X's last account-level refusal; null before one),
    posts_received, posts_per_second, bytes_received, error_messages, quarantined_lines,
    reconnects, connects, keep_alives, http_errors, files_sealed, records_sealed,
    spool_write_errors, dropped_after_close, files_compressed, compress_errors, files_uploaded,
    bytes_uploaded, upload_errors, pending_files, oldest_pending_seconds, spool_disk_free_percent,
    cloudwatch_dropped,
    last_post_at, last_upload_at, last_upload_key, last_error and last_error_at (the problem not yet
    recovered from and when it was last seen), last_stream_error (X's own words for it), null once
    the collector is healthy again after it: then resolved_error and resolved_error_at, with
    recovered_at (error_fields); cloudwatch_last_error;
    the spend figures (collector.telemetry.ledger.BillingLedger.figures): billable_posts_today,
    billable_posts_cycle, spend_usd_today, spend_usd_cycle, spend_usd_last_hour,
    spend_usd_cycle_forecast (at most X's monthly cap; null for the first 10 minutes of measured
    rate and while X refuses for money: spend_forecast_note says why), monthly_cap_reached_on
    (the UTC day the forecast reaches the cap, else null), uncountable_post_ids (ids no uint64
    holds: stored, not counted), billing_cycle_start, monthly_cap_used_percent (X's own count
    when known), budget {posts_per_day,
    usd_per_month, usd_per_post, billing_cycle_day, on_exhausted, remaining_posts_today};
    connection is "paused" while the budget holds the stream closed;
    the last `collector compliance` run ({spool.dir}/compliance/last_run.json, compliance_fields):
    compliance_last_run_at, compliance_last_run_ok, compliance_last_error,
    compliance_last_ok_at, compliance_age_seconds;
    after a run that ended with a non-zero code (record_exit):
    state "exited", exit_code, health "failing" and the reason as health_reason
(the counters and gauges are declared in collector.telemetry.metrics.DECLARED).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.spool.layout import SpoolDirs, atomic_write
from collector.telemetry.health import DEGRADED, FAILING, HEALTHY, Health
from collector.telemetry.metrics import (
    COUNTER,
    DECLARED,
    LAST_ERROR,
    LAST_STREAM_ERROR,
    Metrics,
)
from collector.telemetry.redact import SECRETS

log = logging.getLogger(__name__)

STATUS_INTERVAL = 2.0
PROGRESS_INTERVAL = 10.0
# s: while nothing changes (X refusing for hours: the monthly cap, credits spent) the progress
# line is logged this seldom, so the log holds a few lines an hour, not 360
PROGRESS_UNCHANGED_INTERVAL = 3600.0
DISCONNECTED_LIMIT = 300.0  # `collector status` fails after 5 minutes without a connection
STALE_LIMIT = 60.0  # a status file older than this means the process is stuck
QUIET_SHOWN_AFTER = 300.0  # "connected, no post for N min" is shown after this (not unhealthy)
EXIT_UNHEALTHY = 1
EXIT_NOT_RUNNING = 3  # LSB: program is not running
MIN_PENDING_LIMIT = 10.0  # s: the least age of a pending file that counts as stuck
# status.json is written padded to at least this size, so that with the disk full it can still
# be rewritten in place, in blocks it already owns (write_status_file)
STATUS_FILE_BYTES = 16 * 1024

_EPOCH_FIELDS = ("connection_since", "last_post_at")


def spool_gauges(dirs: SpoolDirs, now: float | None = None) -> dict[str, float]:
    """oldest_pending_seconds: age (s) of the oldest file in sealed/ or ready/, measured from its
    last write (sealing or compression), 0 when nothing is pending; spool_disk_free_percent: the
    share of the spool's file system still available to the collector (statvfs f_bavail)."""
    now = time.time() if now is None else now
    oldest = now
    for folder in (dirs.sealed, dirs.ready):
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue  # temporaries and checksum sidecars
            try:
                oldest = min(oldest, entry.stat().st_mtime)
            except OSError:
                continue  # uploaded (deleted) meanwhile
    gauges: dict[str, float] = {"oldest_pending_seconds": round(max(0.0, now - oldest), 1)}
    try:
        disk = os.statvfs(dirs.root)
        gauges["spool_disk_free_percent"] = round(100.0 * disk.f_bavail / disk.f_blocks, 1)
    except (OSError, ZeroDivisionError):
        pass
    return gauges


def compliance_fields(spool_root: Path, started_at: float, now: float) -> dict[str, object]:
    """The last `collector compliance` run as status.json shows it and CloudWatch gets it.

    compliance_last_run_at / _ok / _error: when the last run ended, whether it succeeded, X's
    (or S3's) reason when not; compliance_last_ok_at: when the last successful run ended;
    compliance_age_seconds: seconds since then, or since `started_at` (the collector's start)
    when no run ever succeeded, so a timer that never runs is overdue too. None values when
    the record is unreadable; the file is written by the compliance command, which is
    another process (atomic replace), so a reader never sees half a record.
    """
    from collector.analysis.compliance import read_last_run

    try:
        last = read_last_run(spool_root) or {}
    except OSError:  # not readable by the collector's user: shown as no run, not a crash
        last = {}
    ok_at = last.get("finished_at") if last.get("ok") else last.get("last_ok_at")
    since = started_at
    if ok_at:
        with contextlib.suppress(AttributeError, ValueError):  # not an ISO time: as never
            since = datetime.fromisoformat(ok_at.replace("Z", "+00:00")).timestamp()
    return {
        "compliance_last_run_at": last.get("finished_at"),
        "compliance_last_run_ok": last.get("ok") if last else None,
        "compliance_last_error": None if last.get("ok", True) else last.get("error"),
        "compliance_last_ok_at": ok_at,
        "compliance_age_seconds": round(max(0.0, now - since)),
    }


class UploadAgeWatch:
    """Health from age, not only from errors: a hung S3 returns no error for minutes.

    Degraded when the oldest pending file (sealed/ or ready/) is older than `limit` seconds and
    no upload was confirmed in the last `limit` seconds (a backlog that drains is not a hang);
    failing `failing_after` seconds later. `limit` is one rotation period, at least
    MIN_PENDING_LIMIT: a file is normally uploaded seconds after it is sealed, so a hang that
    starts just after a rotation shows within two rotation periods.
    """

    SOURCE = "uploads"

    def __init__(self, health: Health, limit: float, failing_after: float, where: str) -> None:
        self.health = health
        self.limit = max(limit, MIN_PENDING_LIMIT)
        self.failing_after = failing_after
        self.where = where
        self.last_confirmed = time.monotonic()  # the run's start counts as a fresh start

    def confirmed(self) -> None:
        """An upload was confirmed (created, or already held with the same checksum)."""
        self.last_confirmed = time.monotonic()

    def check(self, oldest_pending_seconds: float) -> None:
        since_confirmed = time.monotonic() - self.last_confirmed
        if oldest_pending_seconds <= self.limit or since_confirmed <= self.limit:
            self.health.clear(self.SOURCE)
            return
        self.health.report(
            self.SOURCE,
            DEGRADED,
            f"uploads to {self.where} pending for {oldest_pending_seconds:.0f} s without a"
            f" confirmed upload for {since_confirmed:.0f} s (S3 hangs or refuses); files stay"
            " in the spool",
            failing_after=self.failing_after,
        )


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


def error_fields(status: dict, metrics: Metrics, health: Health) -> dict[str, object]:
    """The present problem apart from history: last_error / last_error_at (when it was last
    set) and last_stream_error (X's own words: a refusal, a stall, an error message in the
    stream) hold only what is not yet recovered from; an error set before the last recovery
    (the collector healthy again after it) is resolved_error / resolved_error_at, and
    recovered_at says when the collector became healthy again (docs/collector.md#health)."""
    recovered_at = health.recovered_at
    healthy = status.get("health") == HEALTHY and recovered_at is not None

    def resolved(handle) -> bool:
        at = metrics.set_at(handle)
        return healthy and at is not None and at <= recovered_at  # type: ignore[operator]

    error_at = metrics.set_at(LAST_ERROR)
    fields: dict[str, object] = {
        "last_error": status.get("last_error"),
        "last_error_at": iso(error_at) if status.get("last_error") else None,
        "resolved_error": None,
        "resolved_error_at": None,
        "recovered_at": iso(recovered_at),
    }
    if fields["last_error"] and resolved(LAST_ERROR):
        fields["resolved_error"], fields["resolved_error_at"] = fields["last_error"], iso(error_at)
        fields["last_error"] = fields["last_error_at"] = None
    if status.get("last_stream_error") and resolved(LAST_STREAM_ERROR):
        fields["last_stream_error"] = None
    return fields


class StatusReporter:
    """Writes status.json every STATUS_INTERVAL and logs a progress line every PROGRESS_INTERVAL."""

    def __init__(
        self,
        collector_id: str,
        dirs: SpoolDirs,
        metrics: Metrics,
        health: Health | None = None,
        upload_age: UploadAgeWatch | None = None,
        ledger=None,
    ) -> None:
        self.collector_id = collector_id
        self.upload_age = upload_age
        self.ledger = ledger  # collector.telemetry.ledger.BillingLedger: the spend figures
        self.health = health or Health()
        self.dirs = dirs
        self.metrics = metrics
        self.started_at = time.time()
        self.state = "running"
        self._last_posts = 0
        self._last_rate_at = time.monotonic()
        self._rate = 0.0
        self._progress_posts = 0
        self._progress_at = time.monotonic()
        self._progress_logged: tuple[float, tuple[int, list[str]] | None] = (0.0, None)
        self._rate_lock = threading.Lock()  # snapshot() runs on the status and CloudWatch threads

    def snapshot(self) -> dict:
        gauges = spool_gauges(self.dirs)
        if self.upload_age is not None:
            self.upload_age.check(gauges["oldest_pending_seconds"])
        values: dict[str, Any] = {**self.metrics.snapshot(), **gauges}  # numbers and strings
        now = time.monotonic()
        posts = int(values.get("posts_received", 0) or 0)
        with self._rate_lock:
            if now - self._last_rate_at >= 1.0:
                self._rate = (posts - self._last_posts) / (now - self._last_rate_at)
                self._last_posts, self._last_rate_at = posts, now
        status: dict = {
            "pid": os.getpid(),
            "collector_id": self.collector_id,
            "state": self.state,
            "started_at": iso(self.started_at),
            "updated_at": iso(time.time()),
            "connection": values.get("connection", "connecting"),
            "stream_url": values.get("stream_url"),
            "x_api_version": values.get("x_api_version"),
            "x_account_state": values.get("x_account_state"),
            "next_attempt_at": values.get("next_attempt_at"),
            "x_project_usage": values.get("x_project_usage"),
            "x_project_cap": values.get("x_project_cap"),
            "posts_per_second": round(self._rate, 1),
        }
        status["health"], status["health_reason"] = self.health.state()
        status["health_conditions"] = self.health.behind()
        for metric in DECLARED:
            if metric.in_status:
                # a counter not yet incremented is 0; a gauge never measured is unknown (null)
                status[metric.name] = values.get(metric.name, 0 if metric.kind == COUNTER else None)
        for name in _EPOCH_FIELDS:
            status[name] = iso(values.get(name))
        for name in (
            "last_upload_at",
            "last_upload_key",
            "last_error",
            "last_stream_error",
            "cloudwatch_last_error",
            "repair_last",
            "repair_not_repairable",
        ):
            status[name] = values.get(name)
        if self.ledger is not None:
            status.update(self.ledger.figures())
            status.update(refusal_figures(status, values))
        status.update(compliance_fields(self.dirs.root, self.started_at, time.time()))
        status.update(error_fields(status, self.metrics, self.health))
        return status

    def write(self) -> dict:
        self.health.log_change()  # a condition may have turned degraded or failing with time
        status = self.snapshot()
        write_status_file(self.dirs.status_file, status)
        return status

    def progress(self, final: bool = False) -> None:
        """Log the progress line; the same figures again only after PROGRESS_UNCHANGED_INTERVAL
        (the final line at a stop is always logged)."""
        values: dict[str, Any] = self.metrics.snapshot()  # numbers and strings
        now = time.monotonic()
        posts = int(values.get("posts_received", 0) or 0)
        rate = (posts - self._progress_posts) / max(now - self._progress_at, 1e-6)
        self._progress_posts, self._progress_at = posts, now
        figures = []
        for metric in DECLARED:
            if metric.progress and metric.name != "posts_received":
                value = values.get(metric.name, 0) or 0
                shown = f"{value / 1e6:.1f} MB" if metric.unit == "Bytes" else f"{value}"
                figures.append(f"{shown} {metric.progress}")
        figures.append(f"connection {values.get('connection', 'connecting')}")
        unchanged = (posts, figures) == self._progress_logged[1]
        if unchanged and not final and now - self._progress_logged[0] < PROGRESS_UNCHANGED_INTERVAL:
            return
        self._progress_logged = (now, (posts, figures))
        log.info("progress: %s", ", ".join([f"{posts} posts ({rate:.0f}/s)", *figures]))

    def run(self, stop: threading.Event) -> threading.Thread:
        def loop() -> None:
            next_progress = time.monotonic() + PROGRESS_INTERVAL
            while not stop.wait(STATUS_INTERVAL):
                self.write()
                if time.monotonic() >= next_progress:
                    self.progress()
                    next_progress += PROGRESS_INTERVAL

        thread = threading.Thread(target=loop, name="status", daemon=True)
        thread.start()
        return thread


# `collector status` -----------------------------------------------------------------------------


def record_exit(dirs: SpoolDirs, collector_id: str, code: int, reason: str) -> None:
    """Leave why a run ended (exit 78 or 70) in status.json, over the last snapshot if any, so
    `collector status` shows the reason once the process is gone (supervisor keeps it EXITED).

    A failure to write (no spool folder can be made) is logged, never raised.
    """
    try:
        previous = read_status(dirs) or {}
    except OSError:
        previous = {}
    status = {
        **previous,
        "pid": os.getpid(),
        "collector_id": collector_id,
        "state": "exited",
        "exit_code": code,
        "updated_at": iso(time.time()),
        "health": FAILING,
        "health_reason": SECRETS.scrub(reason),
    }
    try:
        dirs.root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return  # the spool folder itself is the problem, and the exit's own line says so
    write_status_file(dirs.status_file, status)


def write_status_file(path: Path, status: dict) -> bool:
    """Write status.json so that `collector status` tells the truth even with the disk full.

    Normally an atomic replace (readers see the old or the new file). The content is padded with
    spaces (valid JSON whitespace) to STATUS_FILE_BYTES, so when the disk has no room for a new
    file the same bytes are written in place, over blocks the file already owns; a reader that
    meets a half-written file reads again (read_status). Returns False (logged) when neither works.
    """
    data = json.dumps(status, indent=1).encode() + b"\n"
    data += b" " * max(0, STATUS_FILE_BYTES - len(data))
    try:
        atomic_write(path, data)
        return True
    except OSError as exc:
        replace_error = exc
        path.with_name(f".{path.name}.tmp").unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            size = os.fstat(fd).st_size
            if size < len(data):
                raise OSError(f"status file is {size} bytes, {len(data)} needed")
            os.pwrite(fd, data + b" " * (size - len(data)), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    except OSError as exc:
        log.error("cannot write %s: %s (in place: %s)", path, replace_error, exc)
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"collector" in cmdline  # a recycled pid belongs to some other program


def _age(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return time.time() - datetime.fromisoformat(stamp).timestamp()


def assess(status: dict | None, disconnected_limit: float = DISCONNECTED_LIMIT) -> tuple[int, str]:
    """(exit code, one-line verdict) for a status.json content.

    Unhealthy (1) when the status file is older than STALE_LIMIT or the stream has not been
    connected for more than `disconnected_limit` seconds (`collector status --max-disconnected`).
    """
    if status is None:
        return EXIT_NOT_RUNNING, "not running (no status file)"
    pid = status.get("pid")
    if status.get("state") == "exited":
        return EXIT_NOT_RUNNING, (
            f"not running: exited with code {status.get('exit_code')} at "
            f"{status.get('updated_at')}: {status.get('health_reason')}"
        )
    if status.get("state") == "stopped" or not isinstance(pid, int) or not pid_alive(pid):
        return EXIT_NOT_RUNNING, f"not running (last update {status.get('updated_at')})"
    updated = _age(status.get("updated_at"))
    if updated is not None and updated > STALE_LIMIT:
        return EXIT_UNHEALTHY, f"running (pid {pid}) but status not updated for {updated:.0f} s"
    health = status.get("health", HEALTHY)
    if health != HEALTHY:
        return EXIT_UNHEALTHY, f"running (pid {pid}), {health}: {status.get('health_reason')}"
    if status.get("connection") != "connected":
        since = _age(status.get("connection_since"))
        if since is not None and since > disconnected_limit:
            return EXIT_UNHEALTHY, f"running (pid {pid}) but disconnected for {since:.0f} s"
        return 0, f"running (pid {pid}), healthy, {status.get('connection')}"
    quiet = _age(status.get("last_post_at") or status.get("started_at"))
    if quiet is not None and quiet >= QUIET_SHOWN_AFTER:
        # a quiet rule is normal: shown, not unhealthy
        return 0, f"running (pid {pid}), healthy, connected, no post for {quiet / 60:.0f} min"
    return 0, f"running (pid {pid}), healthy, connected"


COMPLIANCE_SCHEDULE_FILE = "compliance-schedule.json"  # next to the config (roles/compliance)
COMPLIANCE_OVERDUE_HOURS = 36  # X's 24 h plus the schedule's slack: the overdue alarm's default


def read_compliance_schedule(config_path: Path) -> dict | None:
    """The compliance timers' schedule the deploy left next to the collector's config
    (roles/compliance: overdue_hours, daily_since, daily_on_calendar, archive_on_calendar), or
    None where no timer runs `collector compliance` (a hand-made setup, compliance_enabled:
    false). An unreadable file counts as scheduled with the default threshold."""
    path = Path(config_path).parent / COMPLIANCE_SCHEDULE_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"overdue_hours": COMPLIANCE_OVERDUE_HOURS}
    return doc if isinstance(doc, dict) else {"overdue_hours": COMPLIANCE_OVERDUE_HOURS}


def compliance_problem(fields: dict, last_run: dict | None, schedule: dict | None) -> str | None:
    """Why compliance degrades the collector's health, or None.

    A failed last run (X's or S3's reason); on a deployment whose timers run it (`schedule`,
    read_compliance_schedule), no successful run for longer than its overdue_hours (36: X's
    24 h of its developer policy plus 12 h for the daily timer's slack, the same threshold as
    the compliance-overdue alarm), counted from the collector's start when none ever succeeded.
    `fields` are compliance_fields.
    """
    if last_run and not last_run.get("ok", True):
        return f"compliance run failed at {last_run.get('finished_at')}: {last_run.get('error')}"
    if schedule is None:
        return None
    try:
        limit = float(schedule.get("overdue_hours") or COMPLIANCE_OVERDUE_HOURS)
    except (TypeError, ValueError):
        limit = COMPLIANCE_OVERDUE_HOURS
    age = fields.get("compliance_age_seconds")
    if not isinstance(age, (int, float)) or age <= limit * 3600:
        return None
    since = (
        f"last successful run {age / 3600:.0f} h ago ({fields['compliance_last_ok_at']})"
        if fields.get("compliance_last_ok_at")
        else f"no run succeeded since the collector started {age / 3600:.0f} h ago"
    )
    return (
        f"compliance overdue: {since}, over {limit:g} h (X's 24 h plus the schedule's slack; "
        "systemctl list-timers 'twittersnake-compliance*')"
    )


def assess_compliance(
    code: int, verdict: str, current: dict | None, last_run: dict | None, schedule: dict | None
) -> tuple[int, str, dict | None]:
    """The exit code, verdict and status fields with compliance folded in: a failed last run
    or an overdue one (compliance_problem) makes a healthy collector degraded (exit 1), in the
    headline and in health / health_reason alike; a collector that is not running, or already
    unhealthy, keeps its own verdict."""
    if current is None or code != 0:
        return code, verdict, current
    problem = compliance_problem(current, last_run, schedule)
    if problem is None:
        return code, verdict, current
    current = {**current, "health": "degraded", "health_reason": problem}
    return EXIT_UNHEALTHY, f"{verdict.split(', healthy')[0]}, degraded: {problem}", current


def compliance_summary(last_run: dict | None) -> str | None:
    """One line for `collector status`: the last compliance run, its counts or its error."""
    if not last_run:
        return None
    if not last_run.get("ok"):
        return f"failed at {last_run.get('finished_at')}: {last_run.get('error')}"
    return (
        f"ok at {last_run.get('finished_at')}: {last_run.get('ids_checked')} ids checked, "
        f"{last_run.get('removed')} removed, {last_run.get('scrub_geo')} geotags scrubbed "
        f"(jobs {', '.join(last_run.get('jobs') or []) or '-'})"
    )


def read_status(dirs: SpoolDirs) -> dict | None:
    """status.json's content; None when there is none. Other OSErrors (permissions) propagate.

    A file being rewritten in place (disk full: write_status_file) may be read half-written:
    it is read again, a few times, before it counts as unreadable.
    """
    for attempt in range(5):
        try:
            return json.loads(dirs.status_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            if attempt == 4:
                return None
            time.sleep(0.05)
    return None


REPAIR_STATE_FILE = "repair.json"  # gap repair's state in the spool (collector.source.repair)


def repair_open(dirs: SpoolDirs, running: bool) -> str | None:
    """One line for `collector status` on the gap repair has still to fill, from its state
    file: the span open now (not connected since T; after a kill -9, since the last sign of
    life) and the spans waiting for repair; None when there is none."""
    try:
        doc = json.loads((dirs.root / REPAIR_STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    parts = []
    down, alive = doc.get("down_since"), doc.get("alive_at")
    if down and str(down) > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()):
        # stopped while paused by the budget: the pause is not repaired, the time after it is
        parts.append(
            f"stopped while the budget paused the stream until {down}: the time not running "
            "after that will be repaired once the collector runs and connects"
        )
    elif down:
        when = "on reconnect" if running else "once the collector runs and connects"
        parts.append(f"not connected since {down}: will be repaired {when}")
    elif alive and not running:
        parts.append(
            f"not connected since {alive} (its last sign of life: the collector ended without "
            "a stop): will be repaired once it runs and connects"
        )
    pending = [p for p in doc.get("pending") or [] if isinstance(p, list) and len(p) == 2]
    if pending:
        spans = ", ".join(f"{a} to {b}" for a, b in pending[:3])
        more = f" and {len(pending) - 3} more" if len(pending) > 3 else ""
        parts.append(f"{len(pending)} span(s) waiting for repair: {spans}{more}")
    return "; ".join(parts) or None


# x_account_state values in which X refuses the stream for money: nothing is collected or billed
REFUSED_FOR_MONEY = ("credits_depleted", "spending_limit", "monthly_cap")


def refusal_figures(status: dict, values: dict) -> dict:
    """The spend figures that change while X refuses for an account reason: the cap's use
    from X's own count (GET /2/usage/tweets, read at each refusal) when known, 100 % when X
    says the cap is reached; no forecast while nothing is collected (its reason instead)."""
    figures: dict = {}
    usage, cap = values.get("x_project_usage"), values.get("x_project_cap")
    state = status.get("x_account_state")
    if usage is not None and cap:
        figures["monthly_cap_used_percent"] = round(100.0 * usage / cap, 2)
    elif state == "monthly_cap":
        figures["monthly_cap_used_percent"] = 100.0
    if state in REFUSED_FOR_MONEY:
        figures["spend_usd_cycle_forecast"] = None
        figures["spend_forecast_note"] = (
            f"no forecast: X refuses the stream ({state}); nothing is collected or billed "
            "until it accepts"
        )
    return figures


def forecast_text(status: dict) -> str:
    """`forecast $150.00 at its end` (`forecast $15,000.00 at its end: X's monthly cap reached
    on 2026-12-10`), or why there is none."""
    forecast = status.get("spend_usd_cycle_forecast")
    if forecast is None:
        return status.get("spend_forecast_note") or "no forecast"
    cap_on = status.get("monthly_cap_reached_on")
    cap = f": X's monthly cap reached on {cap_on}" if cap_on else ""
    return f"forecast ${forecast:,.2f} at its end{cap}"


def spend_line(status: dict) -> str | None:
    """One line of what X bills, from the ledger's figures in status.json (None without them):
    `spend: 1,000 billable posts today ($5.00); $5.00 this billing cycle (since 2026-12-01),
    forecast $150.00 at its end; budget posts_per_day 1,000 (0 posts left today)`; the posts
    left are those of the cycle (`left this billing cycle`) when usd_per_month binds first."""
    if "spend_usd_cycle" not in status:
        return None
    budget = status.get("budget") or {}
    limits = [
        f"{name} {budget[name]:,}"
        for name in ("posts_per_day", "usd_per_month")
        if budget.get(name) is not None
    ]
    left = budget.get("remaining_posts_today")  # the smaller of the day's and the cycle's
    per_day = budget.get("posts_per_day")
    today = status.get("billable_posts_today", 0)
    today_left = None if per_day is None else max(0, per_day - today)
    when = "today" if left is not None and left == today_left else "this billing cycle"
    limit = ", ".join(limits) + (f" ({left:,} posts left {when})" if left is not None else "")
    return (
        f"spend: {status.get('billable_posts_today', 0):,} billable posts today "
        f"(${status.get('spend_usd_today', 0):,.2f}); ${status.get('spend_usd_cycle', 0):,.2f} "
        f"this billing cycle (since {status.get('billing_cycle_start')}), "
        f"{forecast_text(status)}; "
        f"budget {limit or 'none'}"
    )


def render(status: dict, verdict: str) -> str:
    lines = [f"collector {status.get('collector_id')}: {verdict}"]
    spend = spend_line(status)
    if spend:
        lines.append(spend)
    rows = []
    for key, value in status.items():
        if isinstance(value, dict):  # one row per key of a nested object (budget)
            rows += [(f"{key}.{sub}", inner) for sub, inner in value.items()]
        else:
            rows.append((key, value))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        lines.append(f"  {key.ljust(width)}  {'-' if value is None else value}")
    return "\n".join(lines)
