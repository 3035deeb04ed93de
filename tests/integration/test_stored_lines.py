"""Every line stored in S3 is one complete JSON data message; every post X sent is stored.

The X stand-in streams to `python -m collector run`, which ships to moto S3.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.analysis import export, report
from collector.analysis.loader import SNOWFLAKE_EPOCH_MS
from tests.collector_support import (
    BUCKET,
    CollectorProcess,
    object_lines,
    s3_objects,
    s3_post_ids,
    wait_until,
    write_config,
    x_server_fixture,
)
from tests.fakes.x_server import FakeXServer

BALANCED_CUT = b'{"data":{"id":"125","text":"cut here }}'


x_server = x_server_fixture(count=0)


def test_a_line_cut_where_its_braces_balance_goes_to_quarantine_not_s3(
    tmp_path: Path, x_server: FakeXServer, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, max_seconds=0.5)
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        x_server.inject("balanced_cut")
        x_server.inject("lone_surrogate")  # valid JSON X sends: stored like any post
        x_server.count = 5
        wait_until(lambda: len(s3_post_ids(s3)) == 6, 30, 0.3)
    finally:
        assert collector.stop() == 0, collector.log
    assert sorted(s3_post_ids(s3)) == sorted(x_server.sent_ids)
    stored = [line for key, body in s3_objects(s3).items() for line in object_lines(body, key)]
    assert all(isinstance(json.loads(line)["data"], dict) for line in stored)
    assert not any(b"cut here" in line for line in stored)
    assert any(b'"text":"\\ud83d ' in line for line in stored)  # byte for byte, as X sent it
    quarantine = tmp_path / "spool" / "quarantine"
    (kept,) = quarantine.glob("*-not-json.lines")
    assert kept.read_bytes() == BALANCED_CUT + b"\n"
    assert "quarantined a not-json line" in collector.log


def test_report_and_export_read_every_post_x_sent(tmp_path: Path, x_server, s3, capsys) -> None:
    """X's default answer (no tweet.fields) has no created_at; a post's text may hold a lone
    surrogate escape or a NUL: report and export count each post, none as skipped."""
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, x_server.url, max_seconds=0.5)
    config.write_text(config.read_text().replace("[x]\n", "[x]\ntweet_fields = []\n", 1))
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: x_server.connections == 1, 20)
        x_server.inject("lone_surrogate")
        x_server.inject("control_chars")
        x_server.count = 8
        wait_until(lambda: len(s3_post_ids(s3)) == 10, 30, 0.3)
    finally:
        assert collector.stop() == 0, collector.log
    stored = [line for key, body in s3_objects(s3).items() for line in object_lines(body, key)]
    assert not any(b"created_at" in line for line in stored)  # what X sent without tweet.fields
    now = datetime.now(UTC)
    period = ["--from", f"{now - timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"]
    period += ["--to", f"{now + timedelta(minutes=5):%Y-%m-%dT%H:%M:%SZ}"]
    common = ["--config", str(config), "--cache-dir", str(tmp_path / "cache"), *period]

    assert report.main([*common, "--out", str(tmp_path / "report.html"), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "report.html: 10 posts from " in out and "0 objects and 0 lines skipped" in out, out
    assert "skipped" not in err, err

    csv_path = tmp_path / "posts.csv"
    assert export.main([*common, "--out", str(csv_path), "--offline"]) == 0
    out, err = capsys.readouterr()
    assert "10 posts" in out and "skipped" not in err, out + err
    data = csv_path.read_bytes()
    assert b"\x00" not in data and b"\x07" not in data
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(data.decode("utf-8")))}
    assert sorted(rows) == sorted(x_server.sent_ids)
    texts = [row["text"] for row in rows.values()]
    assert any(text.startswith("\ufffd ") for text in texts)  # the lone surrogate, replaced
    assert any(text.startswith("a\\u0000b\\u0007 ") for text in texts)  # escaped, as JSON does
    for post_id, row in rows.items():  # created_at from the snowflake id
        millis = (int(post_id) >> 22) + SNOWFLAKE_EPOCH_MS
        expected = datetime.fromtimestamp(millis / 1000, UTC)
        assert row["created_at"] == f"{expected:%Y-%m-%dT%H:%M:%S.}{millis % 1000:03d}Z"
