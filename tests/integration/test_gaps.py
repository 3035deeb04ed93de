"""Gap accounting: connection events shipped through the spool, and the report's gaps table.

The events are written by the collector's own EventLog with chosen times and shipped by its
own Shipper to (moto) S3; the posts are objects with chosen created_at. The report must list
exactly the 10-minute stop ("not collecting") and the 10-minute quiet spell ("quiet").
"""

from __future__ import annotations

import gzip
import html
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.analysis import report
from collector.config import load_config
from collector.sink.shipper import Shipper
from collector.spool.layout import SpoolDirs, data_file_name, object_key
from collector.telemetry.events import Event, EventLog, read_events
from collector.telemetry.metrics import Metrics
from tests.bench.report_bench import post_line, templates
from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    object_lines,
    s3_objects,
    s3_post_ids,
    wait_until,
    write_config,
)
from tests.fakes.tcp_proxy import OutageProxy
from tests.fakes.x_server import OPERATIONAL_DISCONNECT, FakeXServer

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def minutes(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def ship_events(config: Path, events: list[tuple[str, datetime, str | None]]) -> None:
    """Write `events` with the collector's EventLog and ship them with its Shipper."""
    cfg = load_config(config)
    dirs = SpoolDirs(cfg.spool.dir)
    dirs.create()
    shipper = Shipper(cfg, dirs, Metrics())
    log = EventLog(dirs, cfg.collector_id, shipper.submit)
    for kind, at, cause in events:
        log.record(kind, cause, at=at)
    shipper.start()
    assert shipper.drain(time.monotonic() + 30) == 0
    shipper.stop()


def put_posts(s3, times: list[datetime]) -> None:
    samples = templates()
    by_hour: dict[datetime, list[bytes]] = {}
    for i, at in enumerate(times):
        line = post_line(samples[i % len(samples)], 10**18 + i, at, ["topic"])
        by_hour.setdefault(at.replace(minute=0, second=0), []).append(line)
    for seq, (hour, lines) in enumerate(sorted(by_hour.items()), start=1):
        first = max(hour, times[0])
        key = object_key("tweets", data_file_name("test-1", first, seq) + ".gz")
        s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(b"".join(lines)))


def every_20_s(start: datetime, end: datetime) -> list[datetime]:
    count = int((end - start).total_seconds() // 20) + 1
    return [start + timedelta(seconds=20 * k) for k in range(count)]


def gap_rows(page: str) -> list[list[str]]:
    section = page.split("<h2 id='gaps'>", 1)[1]
    if "<tbody>" not in section.split("<details", 1)[0]:
        return []
    body = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return [
        [html.unescape(c) for c in re.findall(r"<td>(.*?)</td>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


def test_a_stop_and_a_quiet_spell_are_told_apart(s3, aws_env, tmp_path):
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, "http://127.0.0.1:9", s3_endpoint=aws_env.url)
    ship_events(
        config,
        [
            ("start", minutes(0), None),
            ("connected", minutes(0) + timedelta(seconds=2), None),
            ("stop", minutes(60), "received SIGTERM"),
            ("start", minutes(69.9), None),
            ("connected", minutes(70), None),
            ("s3_refusing", minutes(75), "SlowDown (HTTP 503)"),  # not a collection gap
            ("s3_recovered", minutes(76), None),
            ("stop", minutes(90), "received SIGTERM"),
        ],
    )
    # Posts every 20 s while connected, but none from 10:30 to 10:40 (quiet).
    times = every_20_s(minutes(0) + timedelta(seconds=20), minutes(30))
    times += every_20_s(minutes(40), minutes(59.9))
    times += every_20_s(minutes(70) + timedelta(seconds=20), minutes(89.9))
    put_posts(s3, times)

    out = tmp_path / "report.html"
    argv = ["--config", str(config), "--out", str(out), "--no-progress"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--from", "2026-11-20T09:00Z"]
    argv += ["--to", "2026-11-20T12:00Z"]
    assert report.main(argv) == 0
    page = out.read_text()
    assert gap_rows(page) == [
        ["2026-11-20 10:30:00Z", "2026-11-20 10:40:00Z", "10 min", "quiet", "", ""],
        [
            "2026-11-20 11:00:00Z",
            "2026-11-20 11:10:00Z",
            "10 min",
            "not collecting",
            "stopped (received SIGTERM)",
            "not repaired (no repair recorded: x.repair off, or collected before gap repair)",
        ],
    ]
    # The hour before the first connection and the time after the last stop are no gaps.
    assert "before collection: 2026-11-20 09:00:00Z to 2026-11-20 10:00:02Z" in page
    assert "after the last stop: 2026-11-20 11:30:00Z to 2026-11-20 12:00:00Z" in page
    assert page.count("<td>s3_refusing</td><td>SlowDown (HTTP 503)</td>") == 1


def test_a_disconnection_is_not_collecting_with_its_cause(tmp_path):
    period = report.Period(minutes(-60), minutes(60))
    events = [
        Event("start", minutes(0), "a"),
        Event("connected", minutes(0), "a"),
        Event("disconnected", minutes(20), "a", "stream HTTP 503"),
        Event("connected", minutes(22) + timedelta(seconds=5), "a"),
    ]
    account = report.collecting_spans(events, period)
    assert account.before_collection == (minutes(-60), minutes(0))
    assert account.after_collection is None
    assert [(a, b, on, why) for a, b, on, why in account.collecting] == [
        (minutes(0), minutes(20), True, ""),
        (minutes(20), minutes(22) + timedelta(seconds=5), False, "stream HTTP 503"),
        (minutes(22) + timedelta(seconds=5), minutes(60), True, ""),
    ]
    assert report.format_duration(timedelta(minutes=2, seconds=5)) == "2 min 5 s"
    assert report.format_duration(timedelta(hours=2, minutes=5, seconds=9)) == "2 h 5 min"
    assert report.format_duration(timedelta(days=3, hours=4)) == "3 d 4 h"
    assert report.format_duration(timedelta(milliseconds=300)) == "under 1 s"


def test_the_running_collector_ships_its_events_under_events(s3, aws_env, tmp_path):
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, count=30, keepalive_interval=0.5).start()
    config = write_config(tmp_path, server.url, s3_endpoint=aws_env.url)
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: len(server.sent_ids) == 30, 30)
        wait_until(lambda: sorted(s3_post_ids(s3)) == sorted(server.sent_ids), 30, 0.5)
    finally:
        assert collector.stop() == 0, collector.log
        server.stop()
    assert "everything received was uploaded" in collector.log
    objects = s3_objects(s3, events=True)
    assert all(re.match(r"tweets/_events/dt=\d{4}-\d\d-\d\d/hour=\d\d/", k) for k in objects)
    paths = []
    for key, body in objects.items():
        path = tmp_path / "events" / key.rsplit("/", 1)[1]
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(body)
        paths.append(path)
        assert len(object_lines(body, key)) == 1
    events, problems = read_events(paths)
    assert problems == []
    assert [e.event for e in events] == ["start", "connected", "stop"]
    assert events[-1].cause == "received SIGTERM"
    assert all(e.collector_id == "test-1" for e in events)


STREAMED_FILE = "tweets/dt=2026-11-20/hour=10/test-1-20261120T100000Z-000001.jsonl.gz"
REPAIRED_FILE = "tweets/dt=2026-11-20/hour=10/test-1-repair-20261120T102000Z-000002.jsonl.gz"


def posts_table(streamed: list[datetime], repaired: list[datetime] = (), file=REPAIRED_FILE):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE posts (id VARCHAR, created_at TIMESTAMPTZ, file VARCHAR)")
    rows = [[t, STREAMED_FILE] for t in streamed] + [[t, file] for t in repaired]
    if rows:  # one id per time
        con.executemany(
            "INSERT INTO posts VALUES (?, ?, ?)", [[r[0].isoformat(), *r] for r in rows]
        )
    return con


KILLED = [
    Event("start", minutes(0), "a"),
    Event("connected", minutes(0), "a"),
    Event("start", minutes(30), "a"),  # no stop before it
    Event("connected", minutes(31), "a"),
]


def test_a_killed_collector_is_not_collecting_from_its_last_post(tmp_path):
    """kill -9 leaves no stop event: the restart's start closes the span, posts bound it."""
    period = report.Period(minutes(0), minutes(60))
    times = every_20_s(minutes(0), minutes(20)) + every_20_s(minutes(31), minutes(59.9))
    account = report.account_gaps(posts_table(times), KILLED, period, gap_minutes=5)
    assert account.gaps == [
        report.Gap(
            minutes(20),
            minutes(31),
            report.NOT_COLLECTING,
            report.UNCLEAN_END,
            report.NO_REPAIR_RECORDED,
        )
    ]


def test_a_repaired_kill_9_gap_keeps_its_extent_from_the_last_sign_of_life(tmp_path):
    """Posts fetched again by repair fill a kill -9 gap up to the restart: the gap still runs
    from the last streamed post (or the heartbeat the repair started from), not from them."""
    period = report.Period(minutes(0), minutes(60))
    streamed = every_20_s(minutes(0), minutes(20)) + every_20_s(minutes(31), minutes(59.9))
    repaired = every_20_s(minutes(19), minutes(30.99))
    repair = Event(
        "repair_done", minutes(32), "a", "repaired",
        detail={"from": "2026-11-20T10:19:50Z", "to": "2026-11-20T10:31:00Z", "posts": 36,
                "rules": {"a:topic": 36}, "not_repairable": [], "method": "search"},
    )  # fmt: skip
    con = posts_table(streamed, repaired)
    account = report.account_gaps(con, [*KILLED, repair], period, gap_minutes=5)
    assert account.gaps == [
        report.Gap(
            minutes(20),
            minutes(31),
            report.NOT_COLLECTING,
            report.UNCLEAN_END,
            "repaired (33 posts fetched again)",
        )
    ]
    # a quiet stream: the heartbeat is the later sign of life
    con = posts_table(every_20_s(minutes(31), minutes(59.9)), repaired)
    gaps = report.account_gaps(con, [*KILLED, repair], period, gap_minutes=5).gaps
    (gap,) = [g for g in gaps if g.kind == report.NOT_COLLECTING]
    assert (gap.start, gap.end, gap.cause) == (minutes(19) + timedelta(seconds=50), minutes(31),
                                               report.UNCLEAN_END)  # fmt: skip


def span_columns(png: bytes, colour: str) -> set[int]:
    """x of every pixel column holding the colour (#rrggbb) in the chart's plot area."""
    import io

    from PIL import Image

    rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    image = Image.open(io.BytesIO(png)).convert("RGB")
    middle = image.height // 2  # below the legend, above the axis labels
    return {x for x in range(image.width) if image.getpixel((x, middle)) == rgb}


def test_the_time_chart_shades_a_stop_apart_from_a_quiet_spell():
    """Posts per minute alone look the same in a gap and a quiet spell: the chart shades
    'not collecting' and 'quiet' in their colours, where the gaps table puts them."""
    import duckdb

    period = report.Period(minutes(0), minutes(60))
    events = [
        Event("start", minutes(5), "a"),
        Event("connected", minutes(5), "a"),
        Event("stop", minutes(20), "a", "received SIGTERM"),
        Event("start", minutes(30), "a"),
        Event("connected", minutes(30), "a"),
    ]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE posts (created_at TIMESTAMPTZ)")
    times = every_20_s(minutes(5), minutes(20)) + every_20_s(minutes(30), minutes(40))
    times += every_20_s(minutes(52), minutes(60))  # quiet from 40 to 52
    con.executemany("INSERT INTO posts VALUES (?)", [[t] for t in times])
    account = report.account_gaps(con, events, period, gap_minutes=5)
    kinds = [(g.start, g.end, g.kind) for g in account.gaps]
    assert kinds == [
        (minutes(20), minutes(30), report.NOT_COLLECTING),
        (every_20_s(minutes(30), minutes(40))[-1], minutes(52), report.QUIET),
    ]
    per_minute = sorted({t.replace(second=0): 0 for t in times}.items())
    png = report._time_chart(per_minute, "Posts per minute", period, report.chart_spans(account))
    stopped = span_columns(png, report.SPAN_COLOURS[report.NOT_COLLECTING])
    quiet = span_columns(png, report.SPAN_COLOURS[report.QUIET])
    before = span_columns(png, report.SPAN_COLOURS["before collection / after the last stop"])
    # The period's 60 minutes span about 900 pixels: 10 minutes stopped, 12 quiet, 5 before.
    assert 120 < len(stopped) < 180 and 150 < len(quiet) < 210 and 50 < len(before) < 100
    assert max(before) < min(stopped) and max(stopped) < min(quiet)


def shipped_events(s3, folder: Path) -> list[Event]:
    paths = []
    for key, body in s3_objects(s3, events=True).items():
        path = folder / key.rsplit("/", 1)[1]
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(body)
        paths.append(path)
    events, problems = read_events(paths)
    assert problems == []
    return events


OPERATIONAL_DISCONNECT_DETAIL = OPERATIONAL_DISCONNECT["errors"][0]["detail"]


def test_s3_refusing_and_a_dropped_stream_are_recorded_and_shipped(s3, aws_env, tmp_path):
    s3.create_bucket(Bucket=BUCKET)
    proxy = OutageProxy(int(aws_env.url.rsplit(":", 1)[1])).start()
    server = FakeXServer(token=TOKEN, count=0, keepalive_interval=0.5).start()
    config = write_config(tmp_path, server.url, s3_endpoint=proxy.url, max_seconds=0.5)
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: server.connections == 1, 20)
        proxy.down = True
        server.count = 50
        wait_until(lambda: len(server.sent_ids) == 50, 20)
        # boto3 retries a refused connection itself: wait for a failure the shipper saw
        wait_until(lambda: "failed, retry" in collector.log, 60)
        server.operational_disconnect()  # X closes the stream; tweepy reconnects at once
        wait_until(lambda: server.connections == 2, 20)
        server.count = 80
        wait_until(lambda: len(server.sent_ids) == 80, 20)
        proxy.down = False
        wait_until(lambda: sorted(s3_post_ids(s3)) == sorted(server.sent_ids), 60, 0.5)
    finally:
        assert collector.stop() == 0, collector.log
        server.stop()
        proxy.stop()
    events = shipped_events(s3, tmp_path / "events")
    kinds = [e.event for e in events]
    assert kinds[:2] == ["start", "connected"] and kinds[-1] == "stop", kinds
    assert kinds.count("s3_refusing") == kinds.count("s3_recovered") == 1, kinds
    assert kinds.index("s3_refusing") < kinds.index("s3_recovered"), kinds
    dropped = [e for e in events if e.event == "disconnected"]
    closed = "stream closed by X: operational-disconnect: " + OPERATIONAL_DISCONNECT_DETAIL
    assert [e.cause for e in dropped] == [closed], kinds
    assert kinds.count("connected") == 2


def test_a_collector_that_never_connects_is_not_collecting_with_the_refusal():
    period = report.Period(minutes(-10), minutes(60))
    events = [
        Event("start", minutes(0), "a"),
        Event("disconnected", minutes(0) + timedelta(seconds=1), "a", "stream HTTP 401"),
        Event("stop", minutes(1), "a", "exiting: X API rejected the bearer token (HTTP 401)"),
    ]
    account = report.collecting_spans(events, period)
    assert account.before_collection == (minutes(-10), minutes(0))
    assert account.after_collection == (minutes(1), minutes(60))
    assert account.collecting == [
        (minutes(0), minutes(1), False, "never connected (stream HTTP 401)")
    ]


def repair_event(kind: str, start: datetime, end: datetime, cause: str = "", **detail) -> Event:
    doc = {"from": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "to": end.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return Event(kind, end + timedelta(seconds=12), "a", cause, {**doc, **detail})


def repaired_in_gap(count: int):
    """A posts table with `count` repaired posts between minutes 20 and 23."""
    step = 180 / count if count else 1
    times = [minutes(20) + timedelta(seconds=k * step) for k in range(count)]
    return posts_table([], times)


def test_the_gaps_table_says_what_gap_repair_fetched_again():
    gap = report.Gap(minutes(20), minutes(23), report.NOT_COLLECTING, "stream HTTP 503")
    whole = (minutes(20) - timedelta(seconds=5), minutes(23) + timedelta(seconds=5))
    done = repair_event("repair_done", *whole, posts=190, not_repairable=[])
    assert report.repair_state(gap, [done], repaired_in_gap(180)) == (
        "repaired (180 posts fetched again)"
    )
    bio = [{"rule": "c1:bio", "reason": "'bio:' is a stream-only operator"}]
    partly = repair_event("repair_done", *whole, posts=90, not_repairable=bio)
    assert report.repair_state(gap, [partly], repaired_in_gap(90)) == (
        "partly repaired (90 posts fetched again; not repairable: c1:bio)"
    )
    half = repair_event("repair_done", minutes(21), minutes(23), posts=60, not_repairable=[])
    assert report.repair_state(gap, [half], repaired_in_gap(60)) == (
        "partly repaired (60 posts fetched again; part of the span not searched)"
    )
    failed = repair_event("repair_failed", *whole, "the span is older than recent search's 7 days")
    assert report.repair_state(gap, [failed], repaired_in_gap(0)) == (
        "not repaired (the span is older than recent search's 7 days)"
    )
    backfill = repair_event("repair_done", *whole, posts=0, not_repairable=[], method="backfill")
    assert report.repair_state(gap, [backfill], repaired_in_gap(0)) == (
        "repaired (backfill_minutes on the reconnect)"
    )
    recovery = repair_event("repair_done", *whole, posts=75, not_repairable=[], method="recovery")
    assert report.repair_state(gap, [recovery], repaired_in_gap(75)) == (
        "repaired (75 posts fetched again by Recovery)"
    )
    elsewhere = repair_event("repair_done", minutes(40), minutes(41), posts=5, not_repairable=[])
    assert report.repair_state(gap, [elsewhere], repaired_in_gap(0)).startswith(
        "not repaired (no repair recorded"
    )
    # repair events are not connection events: the spans stay what the connection says
    events = [
        Event("start", minutes(0), "a"),
        Event("connected", minutes(0), "a"),
        Event("disconnected", minutes(20), "a", "stream HTTP 503"),
        Event("connected", minutes(23), "a"),
        done,
    ]
    account = report.collecting_spans(events, report.Period(minutes(0), minutes(60)))
    assert [(a, b, on) for a, b, on, _ in account.collecting] == [
        (minutes(0), minutes(20), True),
        (minutes(20), minutes(23), False),
        (minutes(23), minutes(60), True),
    ]


def test_the_time_chart_shades_repaired_posts_on_top_of_the_streamed_ones():
    period = report.Period(minutes(0), minutes(60))
    points = [(minutes(m), 10) for m in range(0, 60)]
    repaired = [(minutes(m), 9) for m in range(20, 25)]  # a 5-minute gap filled by repair
    png = report._time_chart(points, "Posts per minute", period, (), repaired)
    purple = span_columns(png, report.REPAIRED_COLOUR)
    blue = span_columns(png, report.DATA_COLOUR)
    assert purple and blue and not purple & blue
    assert min(purple) > min(blue) and max(purple) < max(blue)  # in the middle, where the gap was
    plain = report._time_chart(points, "Posts per minute", period)
    assert not span_columns(plain, report.REPAIRED_COLOUR)


def test_a_budget_pause_is_its_own_kind_of_gap(s3, aws_env, tmp_path):
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, "http://127.0.0.1:9", s3_endpoint=aws_env.url)
    figures = "1,000 posts today (posts_per_day 1,000), $5.00 at $0.005 a post"
    ship_events(
        config,
        [
            ("start", minutes(0), None),
            ("connected", minutes(0) + timedelta(seconds=2), None),
            ("budget_paused", minutes(30), figures),
            ("connected", minutes(60), None),
            ("stop", minutes(90), "received SIGTERM"),
        ],
    )
    times = every_20_s(minutes(0) + timedelta(seconds=20), minutes(29.9))
    times += every_20_s(minutes(60) + timedelta(seconds=20), minutes(89.9))
    put_posts(s3, times)
    out = tmp_path / "report.html"
    argv = ["--config", str(config), "--out", str(out), "--no-progress"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--from", "2026-11-20T09:00Z"]
    argv += ["--to", "2026-11-20T12:00Z"]
    assert report.main(argv) == 0
    page = out.read_text()
    assert gap_rows(page) == [
        [
            "2026-11-20 10:30:00Z",
            "2026-11-20 11:00:00Z",
            "30 min",
            "paused: budget",
            f"budget reached: {figures}",
            "",
        ]
    ]
    # what it cost: the posts stored, by UTC day, at X's list price
    posts = len(times)
    row = (
        f"<td>2026-11-20</td><td>{posts:,}</td><td>${posts * 0.005:,.2f}</td>"
        f"<td>{100 * posts / 3_000_000:.2f} %</td>"
    )
    assert "<h2 id='cost'>What it cost</h2>" in page and row in page


def test_the_repair_column_counts_each_post_once_for_this_collector_only():
    """The same span repaired twice (automatically, then by hand) and another collector's
    repair objects in the bucket: each post of this collector's repairs counted once."""
    import duckdb

    period = report.Period(minutes(0), minutes(60))
    events = [
        Event("start", minutes(0), "test-1"),
        Event("connected", minutes(0), "test-1"),
        Event("disconnected", minutes(20), "test-1", "503"),
        Event("connected", minutes(30), "test-1"),
    ]
    detail = {"from": "2026-11-20T10:20:00Z", "to": "2026-11-20T10:30:00Z", "posts": 30,
              "rules": {"test-1:topic": 30}, "not_repairable": [], "method": "search"}  # fmt: skip
    events += [
        Event("repair_done", minutes(31), "test-1", "repaired", detail=detail),
        Event("repair_done", minutes(40), "test-1", "repaired", detail=detail),  # by hand
        Event("repair_done", minutes(41), "test-2", "repaired", detail=detail),
    ]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE TABLE posts (id VARCHAR, created_at TIMESTAMPTZ, file VARCHAR)")
    streamed = every_20_s(minutes(0), minutes(19.9)) + every_20_s(minutes(30), minutes(59.9))
    gap = every_20_s(minutes(20), minutes(29.9))
    other = "tweets/dt=2026-11-20/hour=10/test-2-repair-20261120T102000Z-000009.jsonl.gz"
    rows = [[f"s{i}", t, STREAMED_FILE] for i, t in enumerate(streamed)]
    for copy in (REPAIRED_FILE, REPAIRED_FILE.replace("000002", "000003")):  # twice
        rows += [[f"r{i}", t, copy] for i, t in enumerate(gap)]
    rows += [[f"o{i}", t, other] for i, t in enumerate(gap)]  # posts test-2 found
    con.executemany("INSERT INTO posts VALUES (?, ?, ?)", rows)
    account = report.account_gaps(con, events, period, 5, collector_id="test-1")
    (row,) = [g for g in account.gaps if g.kind == report.NOT_COLLECTING]
    assert row.repair == f"repaired ({len(gap)} posts fetched again)"
