"""`collector run`: wires the stream reader, spool writer, shipper and status; signals; exit codes.

Threads: tweepy's stream reader (socket reads) -> SpoolWriter.accept; a ticker (flush every
0.2 s, time-based rotation); the sealer (fsync + rename); the shipper's compressor and
uploader; the status writer; the CloudWatch publisher when [cloudwatch] enabled. The main
thread only waits for a signal or a fatal condition.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from collector.config import Config, ConfigError, load_config
from collector.errors import EX_CONFIG, EX_OK, EX_SOFTWARE, Fatal, SpoolLocked
from collector.source.budget import BudgetGuard
from collector.source.fields import describe
from collector.source.rules import Refusal, RulesAuthError, RulesClient, RulesError
from collector.source.stream import backfills, open_stream, start_stream
from collector.spool.guard import Reserve, SpoolLock, reserve_size
from collector.spool.layout import SpoolDirs
from collector.spool.writer import Quarantine, SpoolWriter, recover_open_files
from collector.telemetry.events import EventLog
from collector.telemetry.health import DEGRADED, Health
from collector.telemetry.ledger import BillingLedger, Exhausted
from collector.telemetry.metrics import LAST_ERROR, Metrics
from collector.telemetry.status import StatusReporter, UploadAgeWatch, record_exit

if TYPE_CHECKING:  # loaded in run(), when needed
    from collector.sink.s3 import PutOutcome
    from collector.source.repair import Repairs

log = logging.getLogger(__name__)

RULES_RECHECK = 20.0  # s: how often refused rules are checked again (GET rules)
SHUTDOWN_SECONDS = 25.0  # SIGTERM -> exit within 30 s even when S3 does not answer
# Seconds since the epoch: the billing ledger's UTC day and the budget's renewals read it
# (a test launcher may replace it to change the day without waiting for midnight).
clock = time.time


def _check_bucket(shipper, metrics: Metrics, health: Health, grace: float) -> None:
    from collector.sink.s3 import BucketMissing, S3AccessDenied, S3Unavailable

    try:
        shipper.check_bucket()
    except BucketMissing as exc:
        raise Fatal(str(exc)) from None
    except S3AccessDenied as exc:
        # A policy can be fixed while we run: retried like an outage, but named as what it is.
        log.error("S3 refuses the collector's credentials at start, uploads will retry: %s", exc)
        metrics.set(LAST_ERROR, str(exc))
        health.report("s3", DEGRADED, f"S3 bucket check refused: {exc}", failing_after=grace)
    except S3Unavailable as exc:
        # S3 trouble at start is retried like any later outage; only a missing bucket is fatal.
        log.warning("S3 not reachable at start, uploads will retry: %s", exc)
        metrics.set(LAST_ERROR, str(exc))
        health.report("s3", DEGRADED, f"S3 bucket check failed: {exc}", failing_after=grace)


def _sync_rules(cfg: Config, token: str, health: Health) -> list[Refusal]:
    """Make the live rules the configured ones. X refusing every rule is fatal (exit 78: the
    stream would answer 409 forever); refusing some is an ERROR per rule and degraded health."""
    if cfg.x.stream != "filter":
        return []
    try:
        result = RulesClient(cfg, token).sync()
    except RulesAuthError as exc:
        raise Fatal(str(exc)) from None
    except RulesError as exc:
        log.warning("rules sync failed, streaming with the live rules: %s", exc)
        return []
    if not result.refused:
        return []
    if not (result.added or result.kept or result.shared):
        reasons = "; ".join(f"x.rules {refusal.line()}" for refusal in result.refused)
        raise Fatal(f"X refused every configured rule, nothing would be collected: {reasons}")
    _report_refused(health, result.refused)
    return result.refused


def _report_refused(health: Health, refused: list[Refusal]) -> None:
    """The "rules" condition: every configured rule that is not live, named with X's reason."""
    rejected = [r for r in refused if not r.reason.startswith("X accepts it")]
    waiting = [r for r in refused if r not in rejected]
    parts = []
    if rejected:
        reasons = "; ".join(f"x.rules {refusal.line()}" for refusal in rejected)
        parts.append(f"X refused {len(rejected)} rule(s): {reasons}")
    if waiting:
        reasons = "; ".join(f"x.rules {refusal.line()}" for refusal in waiting)
        parts.append(f"{len(waiting)} configured rule(s) not live: {reasons}")
    health.report("rules", DEGRADED, "; ".join(parts))


class ConfigFileWatch:
    """The config file as the rules check re-reads it: once it no longer loads (an edit to a
    running collector, e.g. a rule over the length limit), one WARNING and degraded health
    naming the file's problem; cleared when the file loads again. The running
    collector keeps the configuration it loaded at start (a restart would exit 78)."""

    def __init__(self, cfg: Config, health: Health) -> None:
        self.cfg = cfg
        self.health = health
        self.problem: str | None = None

    def check(self) -> None:
        if self.cfg.path is None:
            return
        try:
            load_config(self.cfg.path)
        except ConfigError as exc:
            problem: str | None = str(exc)
        except OSError as exc:
            problem = f"{self.cfg.path}: cannot read ({exc})"
        else:
            problem = None
        if problem == self.problem:
            return
        self.problem = problem
        if problem is None:
            log.info("config file %s is valid again", self.cfg.path)
            self.health.clear("config")
            return
        reason = (
            f"config file now invalid: {problem}; running with the configuration loaded at "
            "start (a restart would stop with exit 78: fix the file first)"
        )
        log.warning("%s", reason)
        self.health.report("config", DEGRADED, reason)


def _watch_live_rules(
    cfg: Config, token: str, health: Health, refused: list[Refusal], stop: threading.Event
) -> None:
    """Compare X's live rules with the config file (re-read: a rules-only deploy changes it
    without a restart) every x.rules_check_seconds, every RULES_RECHECK seconds while a
    configured rule is not live: degraded naming each such rule, cleared once all are live."""

    config_file = ConfigFileWatch(cfg, health)

    def loop() -> None:
        missing = refused
        verdicts: dict = {(r.value, r.tag): r for r in refused}  # X's dry-run answers so far
        while not stop.wait(
            min(RULES_RECHECK, cfg.x.rules_check_seconds) if missing else cfg.x.rules_check_seconds
        ):
            config_file.check()
            try:
                missing = RulesClient(cfg, token).not_live(verdicts)
            except RulesError as exc:
                log.debug("rules check failed: %s", exc)
                continue
            if missing:
                _report_refused(health, missing)
            else:
                health.clear("rules")

    threading.Thread(target=loop, name="rules-check", daemon=True).start()


class Collector:
    def __init__(self, cfg: Config, token: str) -> None:
        self.cfg = cfg
        self.token = token
        self.dirs = SpoolDirs(cfg.spool.dir)
        self.metrics = Metrics()
        self.health = Health()
        self.stop_requested = threading.Event()
        self.background_stop = threading.Event()
        # set after the final upload, so the last CloudWatch sample counts it
        self.cloudwatch_stop = threading.Event()
        self.stop_cause = "the stream reader ended unexpectedly"
        self.events: EventLog | None = None
        self.repairs: Repairs | None = None  # when x.repair is "auto"
        self.exit_reason: str | None = None  # why run() returned non-zero (status.json keeps it)
        self.lock = SpoolLock(self.dirs)
        endpoint = cfg.s3.endpoint_url or f"AWS S3 in {cfg.s3.region or 'the default region'}"
        self.upload_age = UploadAgeWatch(
            self.health,
            limit=cfg.rotate.max_seconds,
            failing_after=cfg.s3.failing_after_seconds,
            where=f"s3://{cfg.s3.bucket}/{cfg.s3.prefix} at {endpoint}",
        )
        self.ledger: BillingLedger | None = None

    def _stream_event(self, state: str, cause: str | None) -> None:
        # The stop event covers the disconnection the shutdown itself causes; a pause by the
        # budget is recorded as budget_paused (with its figures) by the BudgetGuard.
        if state == "paused":
            return
        if self.events is not None and not self.stop_requested.is_set():
            version = self.metrics.snapshot().get("x_api_version") if state == "connected" else None
            self.events.record(state, cause, api_version=version)  # type: ignore[arg-type]
        # connected / disconnected reach gap repair as the data flow (_data_flow), not here
        repairs, stopping = self.repairs, self.stop_requested.is_set()
        if repairs is not None and not stopping and state not in ("connected", "disconnected"):
            repairs.on_connection(state)

    def _data_flow(self, flowing: bool, at) -> None:
        # A repair span runs from the last byte of a connection to the first byte of the next
        # one with data: a stalled connection (open, silent) is no connection to repair.
        if self.repairs is not None and not self.stop_requested.is_set():
            self.repairs.on_connection("connected" if flowing else "disconnected", at)

    def _budget_event(self, event: str, cause: str | None) -> None:
        if self.events is not None and not self.stop_requested.is_set():
            self.events.record(event, cause)

    def _budget_paused(self, exhausted: Exhausted) -> None:
        # A pause is not a gap: gap repair would buy back the posts it is there not to buy.
        if self.repairs is not None:
            self.repairs.on_paused(exhausted.until)

    def _start_repairs(self, writer: SpoolWriter, shipper, quarantine: Quarantine) -> None:
        """Gap repair (collector.source.repair): spans without connection, searched again."""
        if self.cfg.x.repair != "auto" or self.cfg.x.stream != "filter":
            return
        from collector.source.repair import Repairer, RepairFiles, Repairs

        files = RepairFiles(self.cfg, self.dirs, writer.seq, shipper.submit, quarantine)
        repairer = Repairer(
            self.cfg,
            self.token,
            files,
            self.events,
            self.metrics,
            ledger=self.ledger,
            backfilled_reconnects=backfills(self.cfg),  # Enterprise: backfill_minutes
        )
        repairer.announce()
        self.repairs = Repairs(self.cfg, self.dirs, repairer)
        self.repairs.run(self.background_stop)

    def _account_refused(self, state) -> None:
        # a span X refused for money waits for a repair by hand
        if self.repairs is not None:
            self.repairs.on_refused(state.name)

    def _on_signal(self, signum: int, frame) -> None:
        if not self.stop_requested.is_set():
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stop_cause = f"received {signal.Signals(signum).name}"
        self.stop_requested.set()

    def run(self) -> int:
        from collector.sink.shipper import Shipper

        try:
            self.dirs.create()
        except OSError as exc:
            raise Fatal(f"spool.dir {self.cfg.spool.dir}: cannot create folders ({exc})") from None
        # one collector per spool, taken before anything in the spool is touched (recovery
        # would seal another run's open file under it); released when the process ends
        self.lock.acquire()
        reserve = Reserve(self.dirs, reserve_size(self.dirs))
        reserve.set_aside()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        shipper = Shipper(self.cfg, self.dirs, self.metrics, observers=[self._observe_upload])
        # Connection events ship through the spool like posts (collector.telemetry.events).
        self.events = EventLog(self.dirs, self.cfg.collector_id, shipper.submit)
        started_at = datetime.now(UTC)
        _check_bucket(shipper, self.metrics, self.health, self.cfg.s3.failing_after_seconds)
        refused = _sync_rules(self.cfg, self.token, self.health)
        if self.cfg.x.stream == "filter":
            _watch_live_rules(self.cfg, self.token, self.health, refused, self.background_stop)

        quarantine = Quarantine(self.dirs, self.metrics)
        recovered = recover_open_files(self.dirs, quarantine)
        if recovered:
            log.info("recovered %d unsealed file(s) from a previous run", len(recovered))
        self.ledger = BillingLedger(self.dirs.ledger, self.cfg.budget, clock)
        writer = SpoolWriter(
            self.cfg,
            self.dirs,
            self.metrics,
            shipper.submit,
            quarantine,
            health=self.health,
            reserve=reserve,
            ledger=self.ledger,
        )
        shipper.start()  # uploads what earlier runs left before anything new
        self.events.record("start", at=started_at)
        self._start_repairs(writer, shipper, quarantine)

        stream = open_stream(
            self.cfg,
            self.token,
            writer.accept,
            self.metrics,
            self.health,
            self._stream_event,
            self._account_refused,
            self._data_flow,
        )
        if self.repairs is not None:
            self.repairs.last_data = lambda: stream.last_data_at
        guard = BudgetGuard(
            self.ledger,
            stream,
            lambda: start_stream(self.cfg, stream),
            self.health,
            self._budget_event,
            self._budget_paused,
        )
        guard.start(self.background_stop)
        writer.run_ticker(self.background_stop)
        status = StatusReporter(
            self.cfg.collector_id,
            self.dirs,
            self.metrics,
            self.health,
            self.upload_age,
            ledger=self.ledger,
        )
        status.write()
        status.run(self.background_stop)
        cloudwatch = self._start_cloudwatch(status)
        log.info(
            "collector %s running: %s stream from %s (%s), spool %s, bucket %s",
            self.cfg.collector_id,
            self.cfg.x.stream,
            self.cfg.x.api_base_url,
            describe(self.cfg.x.fields),
            self.cfg.spool.dir,
            self.cfg.s3.bucket,
        )

        while not self.stop_requested.wait(0.25):
            if stream.fatal or guard.reader_ended():
                break
        return self._shutdown(stream, guard, writer, shipper, status, cloudwatch)

    def _observe_upload(self, outcome: PutOutcome) -> None:
        """Every PUT outcome: S3's refusals (code + key prefix) become the "s3" condition,
        failing after s3.failing_after_seconds; the next confirmed upload clears it. The event
        log records refusals and recoveries."""
        if self.events is not None:
            self.events.watch_s3(outcome)
        if outcome.result in ("created", "existed"):
            self.health.clear("s3")
            self.upload_age.confirmed()
        elif outcome.result == "error":
            partition = outcome.key.rsplit("/", 1)[0] + "/"
            status = f" (HTTP {outcome.http_status})" if outcome.http_status else ""
            self.health.report(
                "s3",
                DEGRADED,
                f"S3 refuses uploads: {outcome.problem or outcome.error_code}{status} for "
                f"s3://{self.cfg.s3.bucket}/{partition}; files stay in the spool and are retried",
                failing_after=self.cfg.s3.failing_after_seconds,
            )

    def _start_cloudwatch(self, status: StatusReporter):
        if not self.cfg.cloudwatch.enabled:
            return None
        from collector.telemetry.cloudwatch import CloudWatchPublisher, make_client

        publisher = CloudWatchPublisher(
            self.cfg.collector_id,
            status.snapshot,
            self.metrics,
            make_client(self.cfg),
            interval=self.cfg.cloudwatch.interval_seconds,
        )
        publisher.start(self.cloudwatch_stop)
        log.info(
            "publishing metrics to CloudWatch every %g s (namespace TwitterSnake, CollectorId %s)",
            self.cfg.cloudwatch.interval_seconds,
            self.cfg.collector_id,
        )
        return publisher

    def _write_held_events(self, writer: SpoolWriter) -> None:
        """The events a full disk held back (the stop event among them) are written after
        the writer's close, from the reserve it released (or releases now): the report then
        knows why the collector ended."""
        assert self.events is not None
        if self.events.flush() == 0:
            return
        if writer.reserve is not None and writer.reserve.held:
            freed = writer.reserve.release()
            log.warning("spool disk full at stop: released the %d-byte reserve for events", freed)
        left = self.events.flush()
        if left:
            log.error("stopping with the spool disk full: %d event(s) could not be written", left)
        else:
            log.info("wrote the events the full disk held back, the stop event among them")

    def _shutdown(self, stream, guard, writer: SpoolWriter, shipper, status, cloudwatch) -> int:
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        status.state = "stopping"
        # tweepy checks the flag after each line or keep-alive; a line read meanwhile is still
        # kept. An idle socket is not waited for: the reader is a daemon thread.
        stream.disconnect()
        if guard.reader is not None:
            guard.reader.join(1.0)
        stream.stopped()
        assert self.events is not None and self.ledger is not None  # both set in run()
        self.events.record("stop", stream.fatal or self.stop_cause)
        if self.repairs is not None:
            # the next process repairs from the last byte received (a stall before the stop too)
            self.repairs.on_connection("stop", stream.last_data_at)
        writer.close()  # with the disk full, releases the reserve to write what memory held
        self._write_held_events(writer)
        self.ledger.close()
        if writer.dropped_after_close:
            log.info(
                "%d line(s) arrived after the stop and were not kept", writer.dropped_after_close
            )
        self.background_stop.set()
        remaining = shipper.drain(deadline)
        shipper.stop()
        self.cloudwatch_stop.set()
        if cloudwatch is not None:
            cloudwatch.join()
        status.state = "stopped"
        status.write()
        status.progress(final=True)
        if remaining:
            log.warning(
                "stopped with %d file(s) left in the spool %s; they are uploaded on the next start",
                remaining,
                self.cfg.spool.dir,
            )
        else:
            log.info("stopped; everything received was uploaded")
        if stream.fatal and not self.stop_requested.is_set():
            self.exit_reason = str(stream.fatal)
            if stream.fatal_is_config:
                log.error("exiting: %s", stream.fatal)
                return EX_CONFIG
            log.error("exiting after a stream failure: %s", stream.fatal)
            return EX_SOFTWARE
        if not self.stop_requested.is_set():
            self.exit_reason = "the stream reader ended unexpectedly"
            log.error("exiting: %s", self.exit_reason)
            return EX_SOFTWARE
        return EX_OK


def run(cfg: Config, token: str) -> int:
    """Run until stopped; a non-zero exit leaves its reason in status.json (status.record_exit)."""
    collector = Collector(cfg, token)
    try:
        code = collector.run()
    except SpoolLocked as exc:
        log.error("%s", exc)
        return EX_CONFIG  # status.json belongs to the run that holds the spool: left alone
    except Fatal as exc:
        log.error("%s", exc)
        code, collector.exit_reason = EX_CONFIG, str(exc)
    if code != EX_OK:
        record_exit(collector.dirs, cfg.collector_id, code, collector.exit_reason or "")
    return code
