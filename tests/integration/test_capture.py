"""Research-grade capture: X's renamed spellings and long posts read the same everywhere.

The stand-in renders the same posts (same ids, same content) in X's live spelling and in
OpenAPI 2.167's (`renamed_fields`); both go into the local object cache in the collector's
layout, and `collector export`, the report's figures and the Athena example queries must not
tell them apart. Expectations come from the stand-in's messages, never from the readers' SQL.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
import pytest

from collector.analysis import export, loader, report
from collector.source.fields import FULL
from collector.spool.layout import data_file_name, object_key
from tests.collector_support import BUCKET, write_config
from tests.fakes.x_server import SNOWFLAKE_EPOCH_MS, FakeXServer

POSTS = 400
RENAMED = {
    "edit_history_tweet_ids": "edit_history_post_ids",
    "note_tweet": "note_post",
    "referenced_tweets": "referenced_posts",
}
START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
PERIOD = ["--from", f"{START - timedelta(minutes=5):%Y-%m-%dT%H:%M:%SZ}"]
PERIOD += ["--to", f"{START + timedelta(minutes=45):%Y-%m-%dT%H:%M:%SZ}"]


def post_ids() -> list[int]:
    """Snowflakes 5 s apart from START: created_at is the time each id holds."""
    first_ms = int(START.timestamp() * 1000) - SNOWFLAKE_EPOCH_MS
    return [((first_ms + i * 5000) << 22) | i for i in range(POSTS)]


def stand_in_messages(renamed: bool) -> list[dict]:
    """The stand-in's posts for the full profile's request, a quarter of them long posts."""
    server = FakeXServer()
    server.add_rule("python", tag="test-1:python")
    server.control({"note_share": 0.25, "renamed_fields": renamed})
    lines = [server.post_body(i, FULL.query()) + server._matching_rules for i in post_ids()]
    return [json.loads(line) for line in lines]


def write_cache(root: Path, messages: list[dict], per_object: int = 100) -> Path:
    """`messages` as gzip objects under {root}/{bucket}/{prefix}/dt=/hour=/, as the collector
    names them; returns the cache folder for --cache-dir."""
    cache = root / "cache"
    for seq, first in enumerate(range(0, len(messages), per_object)):
        batch = messages[first : first + per_object]
        created = datetime.fromisoformat(batch[0]["data"]["created_at"].replace("Z", "+00:00"))
        key = object_key("tweets", data_file_name("test-1", created, seq) + ".gz")
        path = cache / BUCKET / key
        path.parent.mkdir(parents=True, exist_ok=True)
        body = b"".join(json.dumps(m, separators=(",", ":")).encode() + b"\n" for m in batch)
        path.write_bytes(gzip.compress(body))
    return cache


def exported_rows(root: Path, messages: list[dict], capsys) -> list[tuple]:
    cache = write_cache(root, messages)
    config = write_config(root, "http://127.0.0.1:9")
    out = root / "posts.parquet"
    argv = ["--config", str(config), "--out", str(out), "--offline", "--no-progress"]
    assert export.main([*argv, "--cache-dir", str(cache), *PERIOD]) == 0
    capsys.readouterr()
    return duckdb.sql(f"SELECT * FROM '{out}' ORDER BY id").fetchall()


def report_figures(root: Path, messages: list[dict], top: int = 20) -> report.Figures:
    cache = write_cache(root, messages)
    con = loader.connect(allowed_directories=[cache])
    files = sorted(cache.rglob("*.jsonl.gz"))
    period = loader.Period(START - timedelta(minutes=5), START + timedelta(minutes=45))
    assert loader.load_posts(con, files, period).posts == POSTS
    return report.compute_figures(con, period, top)


def top_hashtags(root: Path, messages: list[dict]) -> list[tuple]:
    cache = write_cache(root, messages)
    con = loader.connect(allowed_directories=[cache])
    loader.athena_view(con, sorted(cache.rglob("*.jsonl.gz")))
    return con.execute(loader.example_query("top_hashtags")).fetchall()


def column(rows: list[tuple], name: str) -> list:
    index = export.EXPORT_COLUMNS.index(name)
    return [row[index] for row in rows]


def test_switching_the_stand_in_to_the_renamed_spellings_changes_no_figure(tmp_path, capsys):
    old, new = stand_in_messages(False), stand_in_messages(True)
    assert any("note_post" in m["data"] for m in new)
    assert not any(name in m["data"] for m in new for name in RENAMED)
    old_rows = exported_rows(tmp_path / "old", old, capsys)
    assert exported_rows(tmp_path / "new", new, capsys) == old_rows
    assert len(old_rows) == POSTS
    old_figures = report_figures(tmp_path / "old", old)
    assert report_figures(tmp_path / "new", new) == old_figures
    assert all(count for _, count in old_figures.post_types)  # every post type is there
    assert top_hashtags(tmp_path / "new", new) == top_hashtags(tmp_path / "old", old)


def only_renamed(messages: list[dict], field: str) -> list[dict]:
    """The messages with one field (in data and included posts) in its new spelling."""
    renamed = []
    for message in messages:
        message = json.loads(json.dumps(message))
        for post in [message["data"], *message.get("includes", {}).get("tweets", [])]:
            if field in post:
                post[RENAMED[field]] = post.pop(field)
        renamed.append(message)
    return renamed


def test_referenced_posts_gives_the_same_post_types_and_ids(tmp_path, capsys):
    old = stand_in_messages(False)
    new = only_renamed(old, "referenced_tweets")
    rows = exported_rows(tmp_path / "new", new, capsys)
    assert rows == exported_rows(tmp_path / "old", old, capsys)
    types = {m["data"]["id"]: m["data"].get("referenced_tweets", []) for m in old}
    quoted = {i: next((r["id"] for r in refs if r["type"] == "quoted"), None)
              for i, refs in types.items()}  # fmt: skip
    assert dict(zip(column(rows, "id"), column(rows, "quoted_id"), strict=True)) == quoted
    assert {"reply", "quote", "repost"} <= set(column(rows, "post_type"))
    assert report_figures(tmp_path / "n", new) == report_figures(tmp_path / "o", old)


def test_note_post_gives_the_full_text_and_its_hashtags(tmp_path, capsys):
    old = stand_in_messages(False)
    new = only_renamed(old, "note_tweet")
    rows = exported_rows(tmp_path / "new", new, capsys)
    assert rows == exported_rows(tmp_path / "old", old, capsys)
    notes = {m["data"]["id"]: m["data"]["note_tweet"] for m in old if "note_tweet" in m["data"]}
    assert notes
    for post_id, text, hashtags in zip(
        column(rows, "id"), column(rows, "text"), column(rows, "hashtags"), strict=True
    ):
        if post_id in notes:
            assert text == notes[post_id]["text"]
            assert hashtags == re.findall(r"#(\w+)", notes[post_id]["text"])
    assert report_figures(tmp_path / "n", new) == report_figures(tmp_path / "o", old)
    assert top_hashtags(tmp_path / "n", new) == top_hashtags(tmp_path / "o", old)


def test_edit_history_post_ids_gives_the_same_history_and_replaced_version(tmp_path, capsys):
    old = stand_in_messages(False)
    new = only_renamed(old, "edit_history_tweet_ids")
    rows = exported_rows(tmp_path / "new", new, capsys)
    assert rows == exported_rows(tmp_path / "old", old, capsys)
    history = {m["data"]["id"]: m["data"]["edit_history_tweet_ids"] for m in old}
    assert dict(zip(column(rows, "id"), column(rows, "edit_history_tweet_ids"), strict=True)) == (
        history
    )
    replaced = {i: h[-2] for i, h in history.items() if len(h) > 1}
    assert replaced  # the stand-in sends some edited posts
    edited = dict(zip(column(rows, "id"), column(rows, "edited_from_id"), strict=True))
    assert {i: v for i, v in edited.items() if v is not None} == replaced


@pytest.mark.parametrize("spelling", ["note_tweet", "note_post"])
def test_the_report_counts_the_hashtags_mentions_and_domains_of_the_full_text(tmp_path, spelling):
    messages = stand_in_messages(spelling == "note_post")
    figures = report_figures(tmp_path, messages, top=100_000)
    hashtags, mentions, domains = Counter(), Counter(), Counter()
    for message in messages:
        data = message["data"]
        entities = data[spelling]["entities"] if spelling in data else data.get("entities", {})
        hashtags.update(h["tag"].lower() for h in entities.get("hashtags", []))
        mentions.update(m["username"] for m in entities.get("mentions", []))
        hosts = (
            urlsplit(u.get("expanded_url") or u["url"]).hostname for u in entities.get("urls", [])
        )
        domains.update(h.removeprefix("www.") for h in hosts if h)
    for counted, expected in ((figures.hashtags, hashtags), (figures.mentions, mentions),
                              (figures.domains, domains)):  # fmt: skip
        assert counted == sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))
    cut = [t for m in messages for t in re.findall(r"#(\w+)", m["data"].get(spelling, {}).get(
        "text", "")) if f"#{t}" not in m["data"]["text"]]  # fmt: skip
    assert cut and all(tag.lower() in hashtags for tag in cut)  # past the cut, still counted


def test_the_collector_knows_the_names_the_stand_in_accepts() -> None:
    """Two copies of X's lists (the collector's and the stand-in's, which answers 400 for any
    other name) must agree, or a profile could ask for a name X refuses."""
    from collector.source.fields import ACCEPTED
    from tests.fakes import x_server

    stand_in = {
        "tweet_fields": x_server.X_TWEET_FIELDS,
        "expansions": x_server.X_EXPANSIONS,
        "user_fields": x_server.X_USER_FIELDS,
        "media_fields": x_server.X_MEDIA_FIELDS,
        "poll_fields": x_server.X_POLL_FIELDS,
        "place_fields": x_server.X_PLACE_FIELDS,
    }
    assert {kind: set(names) for kind, names in ACCEPTED.items()} == stand_in


def documented_snippets(heading: str) -> list[str]:
    """The python blocks of docs/analysis.md's section `heading`, in order."""
    text = (Path(__file__).resolve().parents[2] / "docs/analysis.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [block.split("```", 1)[0] for block in section.split("```python\n")[1:]]


def test_the_documented_duckdb_snippets_run_over_a_cache_elsewhere(tmp_path, monkeypatch):
    """The user's cache is not the default one (--cache-dir); events sit beside the posts."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "default-cache-unused"))
    messages = stand_in_messages(False)
    cache = write_cache(tmp_path / "elsewhere", messages)
    day = START.strftime("%Y-%m-%d")
    events = cache / BUCKET / "tweets" / "_events" / f"dt={day}" / f"hour={START:%H}"
    events.mkdir(parents=True)
    event = {"event": "start", "at": START.isoformat(), "collector_id": "test-1"}
    (events / f"test-1-{START:%Y%m%dT%H%M%SZ}-9.jsonl.gz").write_bytes(
        gzip.compress(json.dumps(event).encode() + b"\n")
    )
    results = cache / BUCKET / "tweets" / "_compliance" / f"dt={day}"
    results.mkdir(parents=True)
    removed = messages[0]["data"]["id"]
    checked = {"id": removed, "reason": "deleted", "checked_at": f"{day}T00:00:00Z"}
    (results / "1460000000000000001.jsonl").write_text(json.dumps(checked) + "\n")

    first, second = documented_snippets("SQL at scale: Athena")
    assert "cache = loader.default_cache_dir()" in first
    first = first.replace("cache = loader.default_cache_dir()", f"cache = Path({str(cache)!r})")
    scope: dict = {"Path": Path}
    exec(first, scope)  # noqa: S102 (the documentation's own code)
    posts = scope["con"].sql("SELECT count(*) FROM posts").fetchall()
    assert posts == [(POSTS,)]
    assert not [p for p in loader.cached_post_files(cache) if "_events" in p.parts]
    assert scope["con"].sql(loader.example_query("top_hashtags")).fetchall() == top_hashtags(
        tmp_path / "reference", messages
    )
    exec(second, scope)  # noqa: S102
    kept = scope["con"].sql("SELECT count(*) FROM posts_compliant").fetchall()
    assert kept == [(POSTS - 1,)]
