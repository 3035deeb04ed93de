"""`python -m collector run|check|status|rules|repair|report|export|compliance|purge --config
PATH`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import sys
import time
from pathlib import Path

from collector.config import DEFAULT_CONFIG, Config, ConfigError, load_config, read_bearer_token
from collector.errors import (
    EX_CONFIG,
    EX_INTERRUPTED,
    EX_PIPE_CLOSED,
    EX_SOFTWARE,
    EX_UNAVAILABLE,
    ConfigUnreadable,
)
from collector.source.fields import describe
from collector.source.pricing import USD_PER_COUNTS_REQUEST
from collector.spool.layout import SpoolDirs
from collector.telemetry.redact import SECRETS
from collector.telemetry.status import DISCONNECTED_LIMIT

log = logging.getLogger("collector")


class RedactingFormatter(logging.Formatter):
    """Replaces every known secret (telemetry.redact.SECRETS) in a record, tracebacks included."""

    @property
    def secrets(self) -> tuple[str, ...]:
        return SECRETS.secrets

    def add_secret(self, secret: str | None) -> None:
        SECRETS.add(secret)

    def format(self, record: logging.LogRecord) -> str:
        return SECRETS.scrub(super().format(record))


_formatter = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "requests_oauthlib", "oauthlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "X_BEARER_TOKEN"):
        _formatter.add_secret(os.environ.get(name))


def _fail(message: str, code: int = EX_CONFIG) -> int:
    # One line a supervisor log shows as is; secrets are scrubbed like every log line.
    message = SECRETS.scrub(message)
    print(f"collector: error: {message}", file=sys.stderr, flush=True)
    return code


def _config_and_token(args: argparse.Namespace) -> tuple[Config, str]:
    cfg = load_config(args.config)
    token = read_bearer_token(cfg)
    _formatter.add_secret(token)
    return cfg, token


def cmd_run(args: argparse.Namespace) -> int:
    from collector import app
    from collector.telemetry.status import record_exit

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return _fail(str(exc))  # no spool folder known: the message is in the log only
    try:
        token = read_bearer_token(cfg)
    except ConfigError as exc:
        record_exit(SpoolDirs(cfg.spool.dir), cfg.collector_id, EX_CONFIG, str(exc))
        return _fail(str(exc))
    _formatter.add_secret(token)
    return app.run(cfg, token)


def cmd_check(args: argparse.Namespace) -> int:
    from collector.source.rules import RulesClient, RulesError, tag_prefix

    failures = 0

    def report(ok: bool, what: str, detail: str) -> None:
        nonlocal failures
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'}  {what}: {detail}", flush=True)

    try:
        cfg = load_config(args.config)
    except ConfigUnreadable as exc:
        # On the instance the config is root's and the collector's group's (docs/operations.md).
        command = f"sudo {sys.executable} -m collector check --config {args.config}"
        report(False, "config", f"{exc}: run check as root: {command} (docs/operations.md)")
        return EX_CONFIG
    except ConfigError as exc:
        report(False, "config", str(exc))
        return EX_CONFIG
    report(
        True,
        "config",
        f"{args.config} (collector_id {cfg.collector_id}, {cfg.x.stream} stream, "
        f"access level {cfg.x.access_level}: up to {cfg.x.limits.max_rules} rules of "
        f"{cfg.x.rule_max_length or cfg.x.limits.rule_max_length} characters)",
    )
    report(True, "X request", describe(cfg.x.fields))
    try:
        token = read_bearer_token(cfg)
        _formatter.add_secret(token)
        source = "X_BEARER_TOKEN" if os.environ.get("X_BEARER_TOKEN") else cfg.x.bearer_token_file
        report(True, "bearer token", f"read from {source}")
    except ConfigError as exc:
        report(False, "bearer token", str(exc))
        token = None
    if token:
        try:
            live = RulesClient(cfg, token).list()
            ours = [r for r in live if (r.tag or "").startswith(tag_prefix(cfg))]
            report(
                True,
                "X API auth",
                f"{cfg.x.api_base_url}: {len(live)} live rules, {len(ours)} ours",
            )
        except RulesError as exc:
            report(False, "X API auth", str(exc))
        else:
            _check_rules(cfg, token, report)
            _check_account(cfg, token, report)
    report(*_check_s3(cfg))
    return 0 if failures == 0 else 1


def _check_rules(cfg: Config, token: str, report) -> None:
    """X's own verdict on each configured rule (POST rules with dry_run=true)."""
    from collector.source.rules import RulesClient, RulesError

    if cfg.x.stream != "filter":
        return
    try:
        accepted, refused = RulesClient(cfg, token).validate()
    except RulesError as exc:
        report(False, "X rules", str(exc))
        return
    for refusal in refused:
        report(False, "X rule", f"x.rules {refusal.line()}")
    if not refused:
        report(True, "X rules", f"X accepts all {len(accepted)} rule(s) (dry run)")


def _check_account(cfg: Config, token: str, report) -> None:
    """Whether X would refuse the stream for an account reason, asked without opening it:
    the monthly cap (GET /2/usage/tweets: project_usage >= project_cap) and the pay-per-use
    balance (GET /2/usage/credits, when X answers it). Neither request is billed
    (collector.source.usage). A request X refuses is a WARN line: it proves nothing either way."""
    from datetime import UTC, datetime

    from collector.errors import XRequestError
    from collector.source.account import ACCOUNT_STATES
    from collector.source.usage import credits, post_usage

    try:
        usage = post_usage(cfg, token, days=1)
    except XRequestError as exc:
        print(f"WARN  X monthly cap: not checked ({exc})", flush=True)
    else:
        used, cap = usage.project_usage, usage.project_cap
        day = usage.cap_resets_on(datetime.now(UTC).date())
        lifts = f"lifts on {day.isoformat()}" if day else "lifts when the billing cycle resets"
        if used is not None and cap:
            state = ACCOUNT_STATES["usage-cap"]
            if used >= cap:
                report(
                    False,
                    "X monthly cap",
                    f"{state.reason} ({used:,} of {cap:,} posts this billing cycle; {lifts}): X "
                    "refuses the stream with 429 UsageCapExceeded, nothing is collected; wait, "
                    "narrow the rules for the next cycle, or ask X for Enterprise access",
                )
            else:
                report(
                    True,
                    "X monthly cap",
                    f"{used:,} of {cap:,} posts used this billing cycle "
                    f"({100 * used / cap:.1f} %; the cap resets on {day or '?'})",
                )
    try:
        balance = credits(cfg, token)
    except XRequestError as exc:
        print(f"WARN  X credits: not checked ({exc})", flush=True)
        return
    if balance is None or balance.total_balance is None:
        print("WARN  X credits: X does not show this project's balance (GET /2/usage/credits "
              "answered 404); a spent balance shows as 402 on the stream", flush=True)  # fmt: skip
    elif balance.total_balance <= 0:
        state = ACCOUNT_STATES["credits"]
        report(
            False,
            "X credits",
            f"{state.reason}: balance ${balance.total_balance}; X refuses the stream with 402 "
            "until you add credits or enable auto-recharge in the X Developer Console",
        )
    else:
        report(True, "X credits", f"balance ${balance.total_balance}")


def _check_s3(cfg: Config) -> tuple[bool, str, str]:
    from collector.errors import Fatal
    from collector.sink.s3 import BucketMissing, S3Sink, S3Unavailable

    try:
        S3Sink(cfg).check_bucket()
    except (BucketMissing, S3Unavailable, Fatal) as exc:
        return False, "S3 bucket", str(exc)
    key = f" with the key in {cfg.s3.credentials_file}" if cfg.s3.credentials_file else ""
    return True, "S3 bucket", f"s3://{cfg.s3.bucket}/{cfg.s3.prefix} reachable{key}"


def _spool_dir_of_invalid_config(path: str) -> Path | None:
    """spool.dir of a config file that parses as TOML but fails validation (else None)."""
    import tomllib

    from collector.config import SpoolConfig

    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    section = data.get("spool")
    spool = section if isinstance(section, dict) else {}
    value = spool.get("dir", str(SpoolConfig.dir))
    return Path(value) if isinstance(value, str) and value else None


def _timestamp(stamp: object) -> float:
    """An ISO time of status.json as a POSIX timestamp (now when absent or unreadable)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time()


def cmd_status(args: argparse.Namespace) -> int:
    from collector.telemetry import status

    spool_dir: Path | None
    repair_on = True
    try:
        loaded = load_config(args.config)
        spool_dir = loaded.spool.dir
        repair_on = loaded.x.repair == "auto" and loaded.x.stream == "filter"
    except ConfigError as exc:
        # An invalid edit of a running collector's file: its status is still worth reading.
        spool_dir = _spool_dir_of_invalid_config(args.config)
        if spool_dir is None:
            return _fail(str(exc))
        print(f"config: {exc} (status read from {spool_dir})", file=sys.stderr, flush=True)
    try:
        current = status.read_status(SpoolDirs(spool_dir))
    except OSError as exc:
        return _fail(f"cannot read {exc.filename}: {exc.strerror}", 4)
    code, verdict = status.assess(current, disconnected_limit=args.max_disconnected)
    from collector.analysis.compliance import read_last_run

    last_run = read_last_run(spool_dir)
    if current is not None:
        # The record as it is now, not as the collector last copied it into status.json.
        started = _timestamp(current.get("started_at"))
        current = {**current, **status.compliance_fields(spool_dir, started, time.time())}
        if last_run is not None:
            current["compliance_last_run"] = status.compliance_summary(last_run)
    schedule = status.read_compliance_schedule(Path(args.config))
    code, verdict, current = status.assess_compliance(code, verdict, current, last_run, schedule)
    gap = status.repair_open(SpoolDirs(spool_dir), code != status.EXIT_NOT_RUNNING)
    if current is not None and repair_on and gap:
        current = {**current, "repair_open": gap}
    if args.json:
        text = json.dumps({**(current or {}), "verdict": verdict, "healthy": code == 0}, indent=1)
    elif current is None:
        text = f"collector: {verdict}"
    else:
        text = status.render(current, verdict)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # `collector status | head -1`: the reader has what it wanted; the exit code still counts
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


# `rules estimate` exit codes besides 0 (the deploy's budget check reads them: roles/collector)
ESTIMATE_OVER_BUDGET, ESTIMATE_NOT_DONE, ESTIMATE_UNKNOWN = 4, 1, 5


def cmd_estimate(args: argparse.Namespace) -> int:
    """`rules estimate`: see collector.source.estimate."""
    from collector.source import estimate as costs

    try:
        cfg, token = _config_and_token(args)
    except ConfigError as exc:
        return _fail(str(exc))

    def confirm(requests: int) -> bool:
        if args.yes:
            return True
        question = (
            f"This estimate makes {requests} requests to X's counts endpoint, "
            f"${requests * costs.USD_PER_COUNTS_REQUEST:.3f} at "
            f"${costs.USD_PER_COUNTS_REQUEST} a request (Counts: Recent). Go on? [y/N] "
        )
        print(question, end="", file=sys.stderr, flush=True)
        try:
            answer = input()
        except EOFError:
            answer = ""
        return answer.strip().lower() in ("y", "yes")

    try:
        result = costs.estimate(cfg, costs.CountsClient(cfg, token), args.granularity, confirm)
    except costs.CountsError as exc:
        return _fail(f"X's counts endpoint: {exc}", ESTIMATE_NOT_DONE)
    if result is None:
        print("nothing asked: no request made (--yes answers the question)", file=sys.stderr)
        return ESTIMATE_NOT_DONE
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print("\n".join(costs.render(result)), flush=True)
    verdict = result.verdict()
    if verdict == "exceeded":
        return ESTIMATE_OVER_BUDGET
    return ESTIMATE_UNKNOWN if verdict == "unknown" else 0


def cmd_usage(args: argparse.Namespace) -> int:
    """`usage`: X's own figures (GET /2/usage/tweets, /2/usage/credits) beside the ledger's."""
    from datetime import UTC, datetime

    from collector.errors import XRequestError
    from collector.source.usage import credits, post_usage
    from collector.telemetry.ledger import billed_days, cycle_start

    try:
        cfg, token = _config_and_token(args)
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        usage = post_usage(cfg, token, days=args.days)
        balance = credits(cfg, token)
    except XRequestError as exc:
        return _fail(str(exc), 1)
    budget = cfg.budget
    today = datetime.now(UTC).date()
    start = cycle_start(today, budget.billing_cycle_day)
    ledger = {day.isoformat(): n for day, n in billed_days(SpoolDirs(cfg.spool.dir).ledger).items()}
    ledger_cycle = sum(n for day, n in ledger.items() if day >= start.isoformat())
    days = sorted(set(usage.daily) | {d for d in ledger if d >= min(usage.daily, default=d)})
    figures = {
        "x": {
            "project_usage": usage.project_usage,
            "project_cap": usage.project_cap,
            "cap_reset_day": usage.cap_reset_day,
            "cap_resets_on": str(usage.cap_resets_on(today)) if usage.cap_reset_day else None,
            "daily": usage.daily,
            "credits": None
            if balance is None
            else {
                "total_balance": str(balance.total_balance),
                "prepaid_balance": str(balance.prepaid_balance),
                "free_balance": str(balance.free_balance),
            },
        },
        "ledger": {
            "billing_cycle_start": start.isoformat(),
            "billable_posts_cycle": ledger_cycle,
            "spend_usd_cycle": round(ledger_cycle * budget.usd_per_post, 4),
            "daily": {day: ledger.get(day, 0) for day in days},
        },
    }
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    for line in _usage_lines(usage, balance, ledger, ledger_cycle, start, days, budget, today):
        print(line)
    return 0


def _usage_lines(usage, balance, ledger, ledger_cycle, start, days, budget, today) -> list[str]:
    def posts(value) -> str:
        return "-" if value is None else f"{value:,}"

    cap = usage.project_cap
    share = f" ({100 * usage.project_usage / cap:.1f} %)" if cap and usage.project_usage else ""
    lines = [
        f"X (GET /2/usage/tweets): {posts(usage.project_usage)} posts read this billing cycle "
        f"of the project's cap of {posts(cap)}{share}"
        + (
            f"; the cap resets in {usage.cap_reset_day} days ({usage.cap_resets_on(today)})"
            if usage.cap_reset_day is not None
            else ""
        ),
        f"ledger (this collector): {ledger_cycle:,} billable posts since {start} "
        f"(budget.billing_cycle_day {budget.billing_cycle_day}), "
        f"${ledger_cycle * budget.usd_per_post:,.2f} at ${budget.usd_per_post} a post",
    ]
    if usage.project_usage is not None:
        more = usage.project_usage - ledger_cycle
        if more == 0:
            lines.append("difference: none")
        else:
            lines.append(
                f"difference: X counts {abs(more):,} {'more' if more > 0 else 'fewer'} posts "
                "than the ledger (other apps or collectors of the project, a billing cycle "
                "day other than X's, posts X wrote as a pause closed the stream, or X's "
                "deduplication, a soft guarantee)"
            )
    lines.append(f"{'UTC day':<12} {'X':>10} {'ledger':>10} {'difference':>11}")
    for day in days:
        x_day, ours = usage.daily.get(day), ledger.get(day, 0)
        diff = "-" if x_day is None else f"{x_day - ours:+,}"
        lines.append(f"{day:<12} {posts(x_day):>10} {ours:>10,} {diff:>11}")
    if balance is None:
        lines.append("credits (GET /2/usage/credits): not available for this account (X: 404)")
    else:
        lines.append(
            f"credits (GET /2/usage/credits): total_balance ${balance.total_balance}, "
            f"prepaid_balance ${balance.prepaid_balance}, free_balance ${balance.free_balance}"
        )
    return lines


def cmd_rules(args: argparse.Namespace) -> int:
    from collector.source.rules import RulesAuthError, RulesClient, RulesError, tag_prefix

    try:
        cfg, token = _config_and_token(args)
    except ConfigError as exc:
        return _fail(str(exc))
    client = RulesClient(cfg, token)
    try:
        if args.rules_command == "list":
            live = client.list()
            if args.json:
                print(json.dumps([r.to_dict() for r in live], indent=1))
            for rule in [] if args.json else live:
                owner = "ours " if (rule.tag or "").startswith(tag_prefix(cfg)) else "other"
                print(f"{rule.id}  {owner}  tag={rule.tag or '-'}  {rule.value}")
            if not live and not args.json:
                print("no live rules")
            return 0
        if args.check:
            return _print_rules_diff(client.compare(), args.config)
        result = client.sync()
    except RulesAuthError as exc:
        return _fail(str(exc))
    except RulesError as exc:
        # --check: a difference is exit 1, so an X that cannot be asked must not look like one
        return _fail(str(exc), EX_UNAVAILABLE if getattr(args, "check", False) else 1)
    for value, tag in result.added:
        print(f"added    tag={tag}  {value}")
    for rule in result.deleted:
        print(f"deleted  tag={rule.tag}  {rule.value}")
    for value, tag, holder in result.shared:
        print(
            f"shared   tag={tag}  {value}  (X keeps one rule per value: live as rule {holder.id}, "
            f"tag={holder.tag or '-'}, of another client; its posts arrive with that tag)"
        )
    print(
        f"{len(result.added)} added, {len(result.deleted)} deleted, {len(result.kept)} unchanged, "
        f"{len(result.others)} of other clients left alone"
        + (f", {len(result.refused)} refused by X" if result.refused else "")
    )
    for refusal in result.refused:
        print(f"refused  {refusal.line()}")
    return 1 if result.refused else 0


RULES_DIFFER, RULES_REFUSED = 1, 2  # `rules sync --check` exit codes besides 0 (in sync)


def _print_rules_diff(diff, config: str) -> int:
    """`rules sync --check`: what a sync would change, one line each, nothing changed."""
    for value, tag in diff.to_add:
        print(f"to add     tag={tag}  {value}")
    for rule in diff.to_delete:
        print(f"to delete  tag={rule.tag}  {rule.value}")
    for refusal in diff.refused:
        print(f"refused    x.rules {refusal.line()}")
    if diff.in_sync:
        print(f"the live rules match {config}")
        return 0
    print(
        f"the live rules differ from {config}: {len(diff.to_add)} to add, "
        f"{len(diff.to_delete)} to delete"
        + (f", {len(diff.refused)} refused by X (dry run)" if diff.refused else "")
    )
    return RULES_REFUSED if diff.refused else RULES_DIFFER


REPAIR_DRAIN_SECONDS = 300.0  # `collector repair` waits this long for its uploads


def _billing_ledger(cfg: Config):
    """(lock, ledger): the collector's billing ledger when no `collector run` holds the spool;
    else (lock, a ledger of the same folder writing a file of its own), which the running
    collector's ledger reads within a second: either way the repair's posts count in the
    budget, status and `collector usage`, and the budget applies to the repair."""
    from collector.errors import SpoolLocked
    from collector.spool.guard import SpoolLock
    from collector.telemetry.ledger import BillingLedger

    main = SpoolDirs(cfg.spool.dir)
    lock = SpoolLock(main)
    try:
        main.root.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except SpoolLocked:
        writer = f"repair-{os.getpid()}"
        print(
            f"budget: a collector runs on this spool; this repair's posts go to its billing "
            f"ledger (ledger/YYYY-MM-DD.{writer}.u64), which it counts within a second",
            flush=True,
        )
        return lock, BillingLedger(main.ledger, cfg.budget, writer=writer)
    except OSError as exc:
        print(
            f"budget: not checked here ({exc}); the collector's billing ledger does not count "
            "this repair's posts",
            flush=True,
        )
        return lock, None
    return lock, BillingLedger(main.ledger, cfg.budget)


def cmd_repair(args: argparse.Namespace) -> int:
    """Repair [--from, --to) by hand: the same search, files and events as the running
    collector's gap repair (collector.source.repair), in a spool folder of its own."""
    import time

    from collector.sink.shipper import Shipper
    from collector.source import repair
    from collector.spool.compress import ready_name
    from collector.spool.layout import object_key
    from collector.spool.writer import Quarantine
    from collector.telemetry.events import EventLog
    from collector.telemetry.metrics import Metrics

    try:
        cfg, token = _config_and_token(args)
    except ConfigError as exc:
        return _fail(str(exc))
    times = {}
    for option, text in (("--from", args.from_time), ("--to", args.to_time)):
        try:
            times[option] = repair.parse_iso(text)
        except ValueError:
            return _fail(f"{option} {text!r}: expected an ISO 8601 time, e.g. 2026-11-28T08:00Z", 2)
    span = repair.Span(times["--from"], times["--to"])
    if span.start >= span.end:
        return _fail(f"--from {args.from_time} must be before --to {args.to_time}", 2)
    if cfg.x.stream != "filter":
        return _fail("x.stream is 'sample': gap repair searches per rule (a filter stream)")
    # A spool of its own beside the collector's: its own uploader, numbers that cannot meet
    # those of the running collector's repairs (microseconds), the same object layout.
    dirs = SpoolDirs(cfg.spool.dir / "repair-by-hand")
    try:
        dirs.create()
    except OSError as exc:
        return _fail(f"spool.dir {cfg.spool.dir}: cannot create {dirs.root} ({exc})")
    metrics = Metrics()
    shipper = Shipper(cfg, dirs, metrics)
    events = EventLog(dirs, cfg.collector_id, shipper.submit)
    seq = repair.MicrosecondSeq()
    files = repair.RepairFiles(cfg, dirs, seq, shipper.submit, Quarantine(dirs, metrics))
    lock, ledger = _billing_ledger(cfg)
    shipper.start()  # before the repair writes: only an earlier run's files are leftovers
    try:
        result = repair.Repairer(cfg, token, files, events, metrics, ledger=ledger).repair(span)
    finally:
        if ledger is not None:
            ledger.close()
        lock.release()
    remaining = shipper.drain(time.monotonic() + REPAIR_DRAIN_SECONDS)
    shipper.stop()
    print(result.summary(), flush=True)
    price = cfg.budget.usd_per_post
    print(
        f"cost: X bills up to ${result.posts * price:,.2f} for these {result.posts} post(s) "
        f"(${price} each; a post already billed this UTC day is not billed again)"
    )
    for name in result.files:
        ready = ready_name(name, cfg.s3.compression)
        if (dirs.sealed / name).exists() or (dirs.ready / ready).exists():
            print(f"pending  {name} (in {dirs.root})")
        else:
            print(f"uploaded s3://{cfg.s3.bucket}/{object_key(cfg.s3.prefix, ready)}")
    if remaining:
        print(
            f"{remaining} file(s) not uploaded yet: they stay in {dirs.root}; "
            "run the same command again to upload them"
        )
    return 1 if result.failed or remaining else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collector", description="X API v2 stream -> local spool -> S3 (TwitterSnake)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config", default=str(DEFAULT_CONFIG), help=f"TOML file (default {DEFAULT_CONFIG})"
        )
        return p

    with_config(sub.add_parser("run", help="stream until SIGTERM/SIGINT")).set_defaults(
        func=cmd_run
    )
    with_config(
        sub.add_parser("check", help="check config, token, X auth and S3; one line each")
    ).set_defaults(func=cmd_check)
    status_parser = with_config(sub.add_parser("status", help="the running collector's status"))
    status_parser.add_argument("--json", action="store_true", help="print status.json as JSON")
    status_parser.add_argument(
        "--max-disconnected",
        type=float,
        default=DISCONNECTED_LIMIT,
        metavar="SECONDS",
        help=f"exit 1 once disconnected for longer (default {DISCONNECTED_LIMIT:.0f})",
    )
    status_parser.set_defaults(func=cmd_status)
    rules = sub.add_parser("rules", help="show or sync the filtered-stream rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    rules_list = with_config(rules_sub.add_parser("list", help="show the live rules"))
    rules_list.add_argument("--json", action="store_true")
    rules_list.set_defaults(func=cmd_rules)
    rules_sync = with_config(
        rules_sub.add_parser("sync", help="make the live rules equal to the config")
    )
    rules_sync.add_argument(
        "--check",
        action="store_true",
        help="change nothing: print the difference and X's verdict on missing rules (dry run);"
        f" exit 0 in sync, {RULES_DIFFER} on a difference, {RULES_REFUSED} when X refuses a rule",
    )
    rules_sync.set_defaults(func=cmd_rules)
    rules_estimate = with_config(
        rules_sub.add_parser(
            "estimate",
            help="posts, USD and the monthly cap the configured rules imply, from X's counts "
            f"of the last 7 days (one request per rule, ${USD_PER_COUNTS_REQUEST} each); exit 0 "
            f"when the budget holds, {ESTIMATE_OVER_BUDGET} when the forecast exceeds it, "
            f"{ESTIMATE_NOT_DONE} when nothing could be estimated, {ESTIMATE_UNKNOWN} when the "
            "rules estimated hold the budget but some rules cannot be estimated",
        )
    )
    rules_estimate.add_argument(
        "--granularity", choices=("day", "hour"), default="day", help="X's buckets (default day)"
    )
    rules_estimate.add_argument(
        "--yes", action="store_true", help="do not ask before more than 10 requests"
    )
    rules_estimate.add_argument("--json", action="store_true", help="the figures as JSON")
    rules_estimate.set_defaults(func=cmd_estimate)
    usage_parser = with_config(
        sub.add_parser(
            "usage",
            help="X's own usage figures (GET /2/usage/tweets, /2/usage/credits) beside the "
            "collector's billing ledger, per UTC day",
        )
    )
    usage_parser.add_argument(
        "--days", type=int, default=7, choices=range(1, 91), metavar="1-90", help="default 7"
    )
    usage_parser.add_argument("--json", action="store_true", help="the figures as JSON")
    usage_parser.set_defaults(func=cmd_usage)
    repair_parser = with_config(
        sub.add_parser(
            "repair",
            help="fetch again, by recent search, what each live rule matched in a span "
            "(gap repair by hand)",
        )
    )
    for option, dest in (("--from", "from_time"), ("--to", "to_time")):
        repair_parser.add_argument(
            option, dest=dest, required=True, help="ISO 8601 (UTC if no zone)"
        )
    repair_parser.set_defaults(func=cmd_repair)
    # The report imports duckdb and matplotlib: loaded only when asked for (see main), so
    # `run` stays small. Listed here for --help.
    sub.add_parser(
        "report", help="HTML report of a period (collector report --help)", add_help=False
    )
    sub.add_parser(
        "export",
        help="a period's posts as Parquet or CSV, one row each (collector export --help)",
        add_help=False,
    )
    sub.add_parser(
        "compliance",
        help="X's batch compliance job over the archive's post ids (collector compliance --help)",
        add_help=False,
    )
    sub.add_parser(
        "purge",
        help="rewrite raw objects without the posts X reports removed (collector purge --help)",
        add_help=False,
    )
    return parser


def _analysis_installed() -> bool:
    """DuckDB is importable: the report and export need it; the instance's environment
    (collector/environment.yml) leaves it out."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        code = _run(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a socket's, not stdout's: a bug
        # `collector check | head -1`: the reader closed stdout, which is no bug; stop quietly
        # as Unix tools do, and keep Python from writing to the closed pipe again at exit
        # (Python docs, signal module, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EX_PIPE_CLOSED
    return code


def _stdout_closed() -> bool:
    """True when stdout's reader is gone (poll reports an error on a pipe without readers)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (OSError, ValueError):
        return False


def _run(argv: list[str]) -> int:
    if argv[:1] in (["report"], ["export"]) and not _analysis_installed():
        return _fail(
            f"collector {argv[0]} needs DuckDB, which the instance's environment leaves out (its "
            "memory and disk are the collector's): run it on your computer, in this "
            "repository's .venv, with a copy of the config: "
            f".venv/bin/python -m collector {argv[0]} --config collector.toml ... "
            "(docs/analysis.md)",
            EX_UNAVAILABLE,
        )
    if argv[:1] == ["report"]:
        from collector.analysis import report

        return report.main(argv[1:])
    if argv[:1] == ["export"]:
        from collector.analysis import export

        return export.main(argv[1:])
    if argv[:1] == ["compliance"]:
        from collector.analysis import compliance

        return compliance.main(argv[1:])
    if argv[:1] == ["purge"]:
        from collector.analysis import purge

        return purge.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_closed():
            log.critical("unexpected error (a bug): exiting", exc_info=True)
            return EX_SOFTWARE
        raise
    except Exception:
        log.critical("unexpected error (a bug): exiting", exc_info=True)
        return EX_SOFTWARE
