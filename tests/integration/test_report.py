"""`collector report`: objects in (moto) S3 -> cache -> DuckDB -> one HTML page."""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard
from PIL import Image

from collector.analysis import loader, report
from collector.spool.layout import EXTENSIONS, data_file_name, object_key
from tests.bench.report_bench import post_line, templates

BUCKET = "report-bucket"
PREFIX = "tweets"
HOUR = datetime(2026, 11, 27, 10, tzinfo=UTC)


def put_object(s3, first: datetime, seq: int, lines: list[bytes], codec: str = "gzip") -> str:
    body = b"".join(lines)
    if codec == "gzip":
        body = gzip.compress(body, compresslevel=1)
    elif codec == "zstd":
        body = zstandard.compress(body)
    name = data_file_name("collector-1", first, seq) + EXTENSIONS[codec][len(".jsonl") :]
    key = object_key(PREFIX, name)
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return key


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "collector.toml"
    config.write_text(
        f'collector_id = "collector-1"\n[s3]\nbucket = "{BUCKET}"\nprefix = "{PREFIX}"\n'
        f'region = "us-east-1"\n[spool]\ndir = "{tmp_path / "spool"}"\n'
    )
    return config


@pytest.fixture
def bucket(s3):
    s3.create_bucket(Bucket=BUCKET)
    return s3


@pytest.fixture
def collected(bucket):
    """Posts in two hours, three rule tags, gzip and zstd objects; what was sent, per rule/hour."""
    samples = templates()
    sent_rules, sent_hours, seq = Counter(), Counter(), 0
    for hour_offset, count, codec in [(0, 120, "gzip"), (1, 75, "zstd")]:
        start = HOUR + timedelta(hours=hour_offset, minutes=3)
        lines = []
        for i in range(count):
            at = start + timedelta(seconds=20 * i)
            tags = ["python"] if i % 3 else ["python", "rust"]
            tags += ["duckdb"] if i % 5 == 0 else []
            post_id = 10**18 + hour_offset * 10_000 + i
            lines.append(post_line(samples[i % 7], post_id, at, tags, [f"h{i % 4}"], ["ada"]))
            sent_rules.update(tags)
            sent_hours[at.replace(minute=0, second=0)] += 1
        half = len(lines) // 2
        for part in (lines[:half], lines[half:]):
            seq += 1
            put_object(bucket, start, seq, part, codec)
    return sent_rules, sent_hours


def run_report(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "report.html"
    argv = ["--config", str(write_config(tmp_path)), "--out", str(out), "--no-progress"]
    argv += ["--cache-dir", str(tmp_path / "cache"), *extra]
    return report.main(argv), out


def embedded_pngs(page: str) -> list[Image.Image]:
    images = []
    for data in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()
        images.append(image)
    return images


def load_cache(tmp_path: Path, period: loader.Period):
    con = loader.connect(allowed_directories=[tmp_path / "cache"])
    files = loader.cached_files(tmp_path / "cache", BUCKET, PREFIX, period)
    return con, loader.load_posts(con, files, period)


PERIOD = ["--from", "2026-11-27T09:30Z", "--to", "2026-11-27T12:00Z"]


def test_counts_equal_posts_sent_per_rule_and_hour(collected, tmp_path, capsys):
    sent_rules, sent_hours = collected
    code, out = run_report(tmp_path, *PERIOD)
    assert code == 0
    assert "195 posts from 4 objects (4 downloaded, 0 cached)" in capsys.readouterr().out

    period = loader.Period(loader.parse_time(PERIOD[1]), loader.parse_time(PERIOD[3]))
    con, result = load_cache(tmp_path, period)
    figures = report.compute_figures(con, period, top=20)
    assert result.posts == sum(sent_hours.values()) == 195
    assert dict(figures.rules) == dict(sent_rules)
    assert dict(figures.posts_per_hour) == dict(sent_hours)
    page = out.read_text()
    for tag, count in sent_rules.items():
        assert f"<td>{tag}</td><td>{count}</td>" in page


def test_second_run_downloads_nothing_new(collected, tmp_path, capsys):
    run_report(tmp_path, *PERIOD)
    capsys.readouterr()
    assert run_report(tmp_path, *PERIOD)[0] == 0
    assert "(0 downloaded, 4 cached)" in capsys.readouterr().out


def test_only_the_periods_partitions_are_downloaded(collected, tmp_path):
    # 10:30-10:45 lists hour=09 (margin) and hour=10 only: the hour=11 objects stay in S3.
    run_report(tmp_path, "--from", "2026-11-27T10:30Z", "--to", "2026-11-27T10:45Z")
    cached = sorted(p.parent.name for p in (tmp_path / "cache").rglob("*.jsonl*"))
    assert cached == ["hour=10", "hour=10"]


def test_html_embeds_every_chart_as_a_decodable_png(collected, tmp_path):
    code, out = run_report(tmp_path, *PERIOD, "--png", str(tmp_path / "png"))
    assert code == 0
    page = out.read_text()
    images = embedded_pngs(page)
    assert page.count("<img ") == len(images) == 8
    for image in images:
        assert image.format == "PNG"
        assert 400 <= image.width <= 2000 and 150 <= image.height <= 2000
    written = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert written == sorted(
        f"{n}.png"
        for n in (
            "posts_over_time",
            "post_types",
            "authors",
            "rules",
            "hashtags",
            "mentions",
            "domains",
            "languages",
        )
    )


def test_gaps_table_lists_silences_longer_than_the_threshold(collected, tmp_path):
    # Hour 10 posts run 10:03:00-10:42:40, hour 11 posts from 11:03:00: a gap between them.
    _, out = run_report(tmp_path, *PERIOD)
    page = out.read_text()
    # Objects without collector events: a silence cannot be told quiet or not collecting.
    row = "<td>2026-11-27 10:42:40Z</td><td>2026-11-27 11:03:00Z</td><td>20 min 20 s</td>"
    assert row + "<td>no posts</td>" in page
    assert "<td>2026-11-27 09:30:00Z</td><td>2026-11-27 10:03:00Z</td>" in page


def test_empty_period_gives_an_empty_report_and_exit_0(bucket, tmp_path, capsys):
    code, out = run_report(tmp_path, "--since", "2h")
    assert code == 0
    assert "No posts in s3://report-bucket/tweets between" in capsys.readouterr().out
    page = out.read_text()
    assert "class='empty'" in page and "<img " not in page


def test_malformed_objects_are_reported_and_skipped(bucket, collected, tmp_path, capsys):
    samples = templates()
    at = HOUR + timedelta(minutes=50)
    good = [post_line(samples[0], 42 + i, at, ["python"]) for i in range(3)]
    truncated = gzip.compress(b"".join(good))
    key = object_key(PREFIX, data_file_name("collector-1", at, 90) + ".gz")
    bucket.put_object(Bucket=BUCKET, Key=key, Body=truncated[: len(truncated) // 2])
    put_object(bucket, at, 91, [good[0], b'{"data": {"id": "7", "text": "cut\n', good[1]])

    code, out = run_report(tmp_path, *PERIOD)
    assert code == 0
    captured = capsys.readouterr()
    assert "197 posts from 6 objects" in captured.out  # 195 + the 2 good lines of object 91
    assert "1 objects and 1 lines skipped" in captured.out
    assert re.search(r"skipped object .*-000090\.jsonl\.gz: .*GZIP", captured.err)
    assert re.search(r"skipped 1 line\(s\) of .*-000091\.jsonl\.gz", captured.err)
    page = out.read_text()
    assert "Skipped (malformed) objects and lines" in page and "-000090.jsonl.gz" in page


def test_missing_bucket_is_one_clear_line(s3, tmp_path, capsys):
    code, _ = run_report(tmp_path, "--since", "1h")
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: s3://report-bucket:") and "Traceback" not in err


@pytest.mark.parametrize(
    ("extra", "line"),
    [
        (["--gap-minutes", "0"], "error: --gap-minutes 0: expected a number of minutes > 0"),
        (["--top", "0"], "error: --top 0: expected a number of rows >= 1"),
        (["--since", "0h"], "error: --since 0h: the period must be longer than 0 (e.g. 24h)"),
        (["--memory-limit", "lots"], "error: --memory-limit lots: Memory must have a number"),
    ],
)
def test_a_bad_option_is_one_line_naming_it_exit_78(tmp_path, capsys, extra, line):
    code, out = run_report(tmp_path, "--offline", *extra)
    err = capsys.readouterr().err
    assert code == 78 and err.startswith(line) and err.count("\n") == 1, err
    assert not out.exists()


def test_a_missing_config_is_one_line_exit_78(tmp_path, capsys):
    missing = tmp_path / "nope.toml"
    argv = ["--config", str(missing), "--out", str(tmp_path / "r.html"), "--offline"]
    assert report.main(argv) == 78
    assert capsys.readouterr().err == f"error: {missing}: config file not found\n"


def test_out_in_a_new_folder_is_written_and_an_unwritable_one_is_one_line(tmp_path, capsys):
    code, _ = run_report(tmp_path, "--offline", "--out", str(tmp_path / "new" / "r.html"))
    assert code == 0 and (tmp_path / "new" / "r.html").read_text().startswith("<!doctype html>")
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _ = run_report(tmp_path, "--offline", "--out", str(blocker / "r.html"))
    err = capsys.readouterr().err
    assert code == 1 and err == f"error: {blocker}: File exists\n", err


def test_the_collectors_status_is_shown_with_null_as_a_dash(tmp_path):
    """Run where the collector's spool is, the report shows its status.json as `status` does."""
    spool = tmp_path / "spool"
    spool.mkdir()
    status = {"collector_id": "collector-1", "health": "healthy", "health_reason": None}
    (spool / "status.json").write_text(json.dumps(status))
    code, out = run_report(tmp_path, "--offline")
    assert code == 0
    section = out.read_text().split("<h2 id='collector'>Collector status</h2>", 1)[1]
    assert "<tr><td>health_reason</td><td>-</td></tr>" in section
    assert "<tr><td>health</td><td>healthy</td></tr>" in section
