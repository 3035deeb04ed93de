"""`collector export`: the posts the collector shipped to (moto) S3, as Parquet and CSV rows.

The X stand-in streams to `python -m collector run`, which ships to moto; the expected rows are
computed here, in plain Python, from the exact lines the stand-in sent (its templates joined
with the sent ids), never from the exporter's SQL. `twarc2 flatten`, the tool researchers
already use, reads the same S3 objects and must agree on ids and author usernames.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml

from collector.analysis import export
from collector.source.fields import COMPACT, FULL
from collector.spool.layout import data_file_name, object_key
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
from tests.fakes.x_server import FakeXServer

ROOT = Path(__file__).resolve().parents[2]
POSTS = 300
REFERENCE_COLUMNS = {"replied_to": "in_reply_to_id", "quoted": "quoted_id"}
REFERENCE_COLUMNS["retweeted"] = "reposted_id"


@dataclass
class Shipped:
    config: Path
    period: list[str]
    sent: dict[str, dict]  # post id -> the message the stand-in sent
    objects: dict[str, bytes]  # S3 key -> body
    stream_query: dict[str, list[str]]  # what the collector asked X for (its default fields)


def listed(entities: dict, key: str, pick) -> list | None:
    return [pick(item) for item in entities[key]] if key in entities else None


def expected_row(message: dict) -> dict:
    """One export row, computed from the X message as the data dictionary describes it."""
    data, includes = message["data"], message.get("includes", {})
    users = includes.get("users", [])
    references = {r["type"]: r["id"] for r in data.get("referenced_tweets", [])}
    kinds = [("retweeted", "repost"), ("replied_to", "reply"), ("quoted", "quote")]
    note = data.get("note_tweet")  # a long post: the full text and its entities
    entities = note["entities"] if note else data.get("entities", {})
    metrics = data.get("public_metrics", {})
    row = {
        "id": data["id"],
        "created_at": datetime.fromisoformat(data["created_at"].replace("Z", "+00:00")),
        "author_id": data["author_id"],
        "author_username": next(u["username"] for u in users if u["id"] == data["author_id"]),
        "text": note["text"] if note else data["text"],
        "lang": data.get("lang"),
        "conversation_id": data.get("conversation_id"),
        "post_type": next((k for t, k in kinds if t in references), "original"),
        "in_reply_to_user_id": data.get("in_reply_to_user_id"),
        # A list X did not send is null, not empty.
        "hashtags": listed(entities, "hashtags", lambda h: h["tag"]),
        "mentions": listed(entities, "mentions", lambda m: m["username"]),
        "urls": listed(entities, "urls", lambda u: u.get("expanded_url") or u["url"]),
        "rule_ids": [str(r["id"]) for r in message["matching_rules"]],
        "rule_tags": [r.get("tag") for r in message["matching_rules"]],
        "geo_place_id": data.get("geo", {}).get("place_id"),
        "geo_coordinates": data.get("geo", {}).get("coordinates", {}).get("coordinates"),
    }
    for kind, column in REFERENCE_COLUMNS.items():
        row[column] = references.get(kind)
    for name in export._METRICS:
        row[name] = metrics.get(name)
    row.update(added_columns(data, includes, references))
    return row


def added_columns(data: dict, includes: dict, references: dict) -> dict:
    """The columns after geo_coordinates, from X's objects (includes.* by the post's ids)."""
    by_key = {m["media_key"]: m for m in includes.get("media", [])}
    keys = data.get("attachments", {}).get("media_keys")
    media = None if keys is None else [by_key.get(k) or {} for k in keys]
    poll_ids = data.get("attachments", {}).get("poll_ids") or [None]
    poll = next((p for p in includes.get("polls", []) if p["id"] == poll_ids[0]), None)
    place_id = data.get("geo", {}).get("place_id")
    place = next((p for p in includes.get("places", []) if p["id"] == place_id), {})
    history = data.get("edit_history_tweet_ids")
    position = history.index(data["id"]) if history and data["id"] in history else 0
    tweets = {t["id"]: t for t in includes.get("tweets", [])}
    urls = None if media is None else [m.get("url") or m.get("preview_image_url") for m in media]
    row = {
        "text_truncated": data["text"] if "note_tweet" in data else None,
        "media_types": None if media is None else [m.get("type") for m in media],
        "media_urls": urls,
        "media_alt_texts": None if media is None else [m.get("alt_text") for m in media],
        "poll_options": [o["label"] for o in poll["options"]] if poll else None,
        "poll_votes": [o["votes"] for o in poll["options"]] if poll else None,
        "place_full_name": place.get("full_name"),
        "place_country_code": place.get("country_code"),
        "place_bbox": place.get("geo", {}).get("bbox"),
        "possibly_sensitive": data.get("possibly_sensitive"),
        "reply_settings": data.get("reply_settings"),
        "edit_history_tweet_ids": history,
        "edited_from_id": history[position - 1] if position > 0 else None,
    }
    for kind, prefix in (("quoted", "quoted_author"), ("replied_to", "replied_to_author")):
        author = tweets.get(references.get(kind), {}).get("author_id")
        row[f"{prefix}_id"] = author
        row[f"{prefix}_username"] = next((u["username"] for u in includes.get("users", [])
                                          if u["id"] == author), None)  # fmt: skip
    return row


@pytest.fixture
def shipped(s3, aws_env, tmp_path: Path) -> Iterator[Shipped]:
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, count=POSTS, keepalive_interval=1.0)
    server.note_share = 0.1  # some long posts (X Premium): their text is in note_tweet
    server.start()
    config = write_config(tmp_path, server.url, s3_endpoint=aws_env.url, max_records=70)
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: len(server.sent_ids) == POSTS, 30)
        wait_until(lambda: sorted(s3_post_ids(s3)) == sorted(server.sent_ids), 30, 0.5)
    finally:
        assert collector.stop() == 0, collector.log
        server.stop()
    sent = {}
    for post_id in server.sent_ids:
        sent[post_id] = json.loads(server.post_body(int(post_id)) + server._matching_rules)
    objects = s3_objects(s3)
    # At-least-once delivery: the same lines under a second key are still one row per post.
    key, body = sorted(objects.items())[0]
    copy_key = key.replace("-000001.", "-900001.")
    assert copy_key != key
    s3.put_object(Bucket=BUCKET, Key=copy_key, Body=body)
    now = datetime.now(UTC)
    period = ["--from", f"{now - timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"]
    period += ["--to", f"{now + timedelta(minutes=5):%Y-%m-%dT%H:%M:%SZ}"]
    yield Shipped(config, period, sent, objects, server.stream_queries[0])


def run_export(shipped: Shipped, tmp_path: Path, fmt: str, out: Path, capsys) -> str:
    argv = ["--config", str(shipped.config), "--format", fmt, "--out", str(out)]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--no-progress", *shipped.period]
    assert export.main(argv) == 0
    return capsys.readouterr().out


def test_parquet_rows_and_columns_equal_what_the_stand_in_sent(shipped, tmp_path, capsys):
    out = run_export(shipped, tmp_path, "parquet", tmp_path / "posts", capsys)
    assert f"{POSTS} posts (" in out and f"{len(export.EXPORT_COLUMNS)} columns" in out
    days = sorted(p.name for p in (tmp_path / "posts").iterdir())
    assert days == sorted({f"dt={m['data']['created_at'][:10]}" for m in shipped.sent.values()})
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    table = con.sql(
        f"SELECT * FROM read_parquet('{tmp_path / 'posts'}/*/*.parquet', hive_partitioning=true)"
    )
    assert table.columns == [*export.EXPORT_COLUMNS, "dt"]
    rows = [dict(zip(table.columns, values, strict=True)) for values in table.fetchall()]
    assert len(rows) == POSTS  # the duplicated object added no row
    expected = {i: expected_row(m) for i, m in shipped.sent.items()}
    for row in rows:
        assert row.pop("dt") == row["created_at"].date()
        assert row == expected[row["id"]], row["id"]
    assert {r["id"] for r in rows} == set(expected)
    types = {r["post_type"] for r in rows}
    assert types == {"original", "reply", "quote", "repost"}


def test_csv_has_the_same_rows_lists_as_json_and_times_in_utc(shipped, tmp_path, capsys):
    run_export(shipped, tmp_path, "csv", tmp_path / "posts.csv", capsys)
    with open(tmp_path / "posts.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == export.EXPORT_COLUMNS
        rows = list(reader)
    assert len(rows) == POSTS
    assert [r["id"] for r in rows] == sorted(
        shipped.sent, key=lambda i: (shipped.sent[i]["data"]["created_at"], i)
    )
    for row in rows:
        want = expected_row(shipped.sent[row["id"]])
        assert row["created_at"] == shipped.sent[row["id"]]["data"]["created_at"]
        for name in export._LIST_COLUMNS:
            assert (json.loads(row[name]) if row[name] else None) == want[name], name
        for name in ("author_username", "text", "post_type", "reposted_id", "like_count"):
            assert row[name] == ("" if want[name] is None else str(want[name])), name


def test_twarc2_flatten_reads_our_objects_with_the_same_ids_and_authors(shipped, tmp_path, capsys):
    run_export(shipped, tmp_path, "parquet", tmp_path / "posts.parquet", capsys)
    exported = dict(
        duckdb.sql(f"SELECT id, author_username FROM '{tmp_path / 'posts.parquet'}'").fetchall()
    )
    lines = [line for key, body in shipped.objects.items() for line in object_lines(body, key)]
    raw = tmp_path / "stream.jsonl"
    raw.write_bytes(b"".join(line + b"\n" for line in lines))
    flat = tmp_path / "flat.jsonl"
    twarc2 = Path(sys.executable).with_name("twarc2")
    done = subprocess.run(
        [str(twarc2), "--bearer-token", "unused", "flatten", str(raw), str(flat)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    posts = [json.loads(line) for line in flat.read_text().splitlines()]
    assert len(posts) == POSTS
    assert {p["id"]: p["author"]["username"] for p in posts} == exported


def test_the_default_profile_asks_x_for_the_full_set_the_docs_list(shipped) -> None:
    """X sends only id, text and edit_history_tweet_ids unless the request names more
    (https://docs.x.com/x-api/fundamentals/fields): the stand-in recorded what the collector,
    left at its defaults, asked for; it is the set docs/collector.md lists, which holds every
    field the export reads."""
    asked = {name: values[0] for name, values in shipped.stream_query.items()}
    documented = (ROOT / "docs/collector.md").read_text().split("```text\n", 1)[1]
    lines = [line.strip() for line in documented.split("```")[0].splitlines() if line.strip()]
    listed = dict(line.split("=", 1) for line in lines)
    assert asked == listed == FULL.query()
    assert set(COMPACT.tweet_fields) <= set(asked["tweet.fields"].split(","))
    assert "note_tweet" in asked["tweet.fields"]
    # The deploy role asks for the same profile unless the inventory says otherwise.
    defaults = yaml.safe_load((ROOT / "roles/collector/defaults/main.yml").read_text())
    assert defaults["collector_x_fields"] == "full"


def test_an_existing_folder_is_refused_with_one_line(shipped, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    argv = ["--config", str(shipped.config), "--out", str(out), "--offline"]
    argv += ["--cache-dir", str(tmp_path / "cache"), *shipped.period]
    assert export.main(argv) == 78
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out}: exists and is not an empty folder")
    assert (out / "keep.txt").read_text() == "mine"


def test_an_existing_file_is_refused_unless_force(shipped, tmp_path, capsys):
    out = tmp_path / "posts.csv"
    out.write_text("my analysis\n")
    argv = ["--config", str(shipped.config), "--out", str(out), "--offline", "--no-progress"]
    argv += ["--cache-dir", str(tmp_path / "cache"), *shipped.period]
    assert export.main(argv) == 78
    err = capsys.readouterr().err
    assert err == (
        f"error: --out {out}: the file exists (give a new name, or --force to replace it)\n"
    )
    assert out.read_text() == "my analysis\n"
    run_export(shipped, tmp_path, "csv", tmp_path / "fills-the-cache.csv", capsys)
    assert export.main([*argv, "--force"]) == 0
    with out.open(newline="") as f:
        assert len(list(csv.DictReader(f))) == POSTS


def test_out_ending_in_csv_is_a_csv_file_and_a_contradicting_format_one_line(
    shipped, tmp_path, capsys
):
    base = ["--config", str(shipped.config), "--offline", "--cache-dir", str(tmp_path / "cache")]
    base += shipped.period
    run_export(shipped, tmp_path, "csv", tmp_path / "first.csv", capsys)  # fills the cache
    assert export.main([*base, "--out", str(tmp_path / "posts.csv")]) == 0
    assert (tmp_path / "posts.csv").is_file()
    assert "csv" in capsys.readouterr().out
    with (tmp_path / "posts.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == POSTS
    assert export.main([*base, "--out", str(tmp_path / "x.csv"), "--format", "parquet"]) == 78
    err = capsys.readouterr().err
    assert err == f"error: --out {tmp_path / 'x.csv'} ends in .csv but --format is parquet\n"
    assert not (tmp_path / "x.csv").exists()


def test_the_documented_csv_snippets_keep_every_id_column_as_text() -> None:
    """pandas and readr read a column of numbers with blanks (quoted_id) as float, which
    rounds ids over 2^53: the snippets of docs/analysis.md must name every id column the
    export writes."""
    readme = (ROOT / "docs" / "analysis.md").read_text()
    id_columns = [c for c in export.EXPORT_COLUMNS if c == "id" or c.endswith("_id")]
    for fence, start, end, name in (
        ("```python\n", "ids = [", "]", r'"([a-z_]+)"'),
        ("```r\n", "ids <- readr::cols(", ")", r'([a-z_]+) = "c"'),
    ):
        snippet = next(b for b in readme.split(fence)[1:] if "read_csv" in b.split("```")[0])
        listed = snippet.split(start, 1)[1].split(end, 1)[0]
        assert re.findall(name, listed) == id_columns, fence


def test_a_4000_character_note_comes_out_with_its_full_text_and_every_hashtag(
    shipped, tmp_path, capsys
):
    run_export(shipped, tmp_path, "parquet", tmp_path / "posts.parquet", capsys)
    notes = {i: m["data"] for i, m in shipped.sent.items() if "note_tweet" in m["data"]}
    assert notes, "the stand-in sent no long post"
    rows = duckdb.sql(
        f"SELECT id, text, text_truncated, hashtags FROM '{tmp_path / 'posts.parquet'}'"
    ).fetchall()
    exported = {row[0]: row[1:] for row in rows}
    for post_id, data in notes.items():
        text, truncated, hashtags = exported[post_id]
        assert len(text) == 4000 and text == data["note_tweet"]["text"]
        assert truncated == data["text"] and len(truncated) <= 280
        assert hashtags == re.findall(r"#(\w+)", text)  # every hashtag, past the cut too
        assert len(hashtags) > len(data["entities"]["hashtags"])


def test_every_string_cell_of_the_csv_has_its_control_characters_escaped(
    s3, aws_env, tmp_path, capsys
):
    """A place name, a country code, a language or a reply setting is as free as a post's text:
    no raw control character reaches a CSV cell, and a formula stays text."""
    s3.create_bucket(Bucket=BUCKET)
    config = write_config(tmp_path, "http://127.0.0.1:9", s3_endpoint=aws_env.url)
    hour = datetime(2026, 12, 1, 10, tzinfo=UTC)
    line = post_line(templates()[0], 100, hour, ["r"], author=("7", "ev\u0000il"), lang="e\u001fn")
    message = json.loads(line)
    message["data"].update(geo={"place_id": "p\u00011"}, reply_settings="every\u0007one")
    place = {"id": "p\u00011", "full_name": '=HYPERLINK("http://evil")\u0000X'}
    message["includes"]["places"] = [{**place, "country_code": "U\u007fS"}]
    body = gzip.compress(json.dumps(message).encode() + b"\n")
    key = object_key("tweets", data_file_name("test-1", hour, 1) + ".gz")
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)

    out = tmp_path / "posts.csv"
    argv = ["--config", str(config), "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    argv += ["--no-progress", "--from", "2026-12-01T10:00Z", "--to", "2026-12-01T11:00Z"]
    assert export.main(argv) == 0, capsys.readouterr()
    data = out.read_bytes()
    assert not re.search(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", data), data
    (row,) = csv.DictReader(io.StringIO(data.decode("utf-8")))
    assert row["place_full_name"] == '\'=HYPERLINK("http://evil")\\u0000X'
    assert row["author_username"] == "ev\\u0000il"
    assert (row["lang"], row["geo_place_id"]) == ("e\\u001fn", "p\\u00011")
    assert (row["reply_settings"], row["place_country_code"]) == ("every\\u0007one", "U\\u007fS")
