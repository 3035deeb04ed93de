"""The report and the example queries over data the collector itself put in (moto) S3.

The X stand-in streams posts to `python -m collector run`, which ships them to moto. While it
streams, the test changes the live rules (one removed, one added), so each rule tag matches a
different number of posts. Every expectation comes from the stand-in's side (which ids it sent
under which rules, and the post templates it rendered them from), never from the report's code.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.analysis import loader, report
from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    s3_objects,
    s3_post_ids,
    wait_until,
    write_config,
)
from tests.fakes.x_server import RULES_PATH, FakeXServer

PREFIX = "tweets"  # write_config's [s3] prefix
COLLECTOR_ID = "test-1"  # write_config's collector_id; the collector tags rules "{id}:{tag}"
HOURS_SPREAD = 3  # post templates get created_at in this many distinct hours


@dataclass
class Expected:
    posts: int
    per_rule: Counter  # full tag as the collector sets it, "test-1:python"
    per_hour: Counter  # datetime of the UTC hour (by created_at) -> posts
    hashtags: Counter  # lower-cased hashtag -> posts
    authors: Counter  # (author id, username from includes.users) -> posts
    post_types: Counter  # "original", "reply", "quote", "repost" -> posts


@dataclass
class Collected:
    expected: Expected
    config: Path
    period: list[str]  # --from/--to arguments covering every created_at
    object_keys: list[str]


def template_facts(server: FakeXServer) -> list[tuple[tuple[str, str], str]]:
    """Each template's (author id, username) and post type, read as X's JSON says them."""
    kinds = {"retweeted": "repost", "replied_to": "reply", "quoted": "quote"}
    facts = []
    for message in server.messages:
        data, includes = message["data"], message["includes"]
        username = next(u["username"] for u in includes["users"] if u["id"] == data["author_id"])
        types = [kinds[r["type"]] for r in data.get("referenced_tweets", [])]
        kind = next((k for k in ("repost", "reply", "quote") if k in types), "original")
        facts.append(((data["author_id"], username), kind))
    return facts


def spread_templates(server: FakeXServer, now: datetime) -> tuple[list[datetime], list[list[str]]]:
    """Give the stand-in's templates created_at in three hours and a few hashtags each.

    The stand-in stamps every post with the time it sends it and has only two hashtags, which
    would make the per-hour and top-hashtag checks trivially true. Returns each template's
    created_at and hashtags, from which the expectations are computed.
    """
    # The middle of the previous hour, give or take 20 min: each post stays in its hour.
    middle = now.replace(minute=20, second=0, microsecond=0) - timedelta(hours=1)
    created, hashtags = [], []
    for index, message in enumerate(server.messages):
        data = message["data"]
        at = middle - timedelta(hours=index % HOURS_SPREAD) + timedelta(seconds=index * 7 % 1200)
        data["created_at"] = at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"
        tags = [h["tag"] for h in data.get("entities", {}).get("hashtags", [])]
        # 23 topics in mixed case ("Topic3", "TOPIC3", "topic3" count as one), plus "DuckDB"
        extra = [("Topic", "TOPIC", "topic")[index % 3] + str(index % 23)]
        extra += ["DuckDB"] if index % 4 == 0 else []
        entities = data.setdefault("entities", {})
        entities.setdefault("hashtags", []).extend({"start": 0, "end": 1, "tag": t} for t in extra)
        created.append(at)
        hashtags.append(tags + extra)
    return created, hashtags


def post_rules(server: FakeXServer, body: dict) -> dict:
    """Change the live rules through the stand-in's rules API, like another X client would."""
    request = urllib.request.Request(
        server.url + RULES_PATH,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def live_tags(server: FakeXServer) -> list[str]:
    return sorted(rule.get("tag", "") for rule in server.rules.values())


def send(server: FakeXServer, total: int) -> list[str]:
    """Let the stand-in send posts until `total` in all; the ids of this batch."""
    before = len(server.sent_ids)
    server.count = total
    wait_until(lambda: len(server.sent_ids) == total, 20)
    return server.sent_ids[before:]


@pytest.fixture
def collected(s3, aws_env, tmp_path: Path) -> Iterator[Collected]:
    s3.create_bucket(Bucket=BUCKET)
    now = datetime.now(UTC)
    server = FakeXServer(token=TOKEN, rate=400, count=0, keepalive_interval=1.0)
    created, hashtags = spread_templates(server, now)
    facts = template_facts(server)
    server.start()
    config = write_config(
        tmp_path,
        server.url,
        rules=[("python lang:en", "python"), ("duckdb", "duckdb")],
        max_records=100,
        max_seconds=0.5,
    )
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: server.connections == 1, 20)
        python, duckdb, snake = (f"{COLLECTOR_ID}:{t}" for t in ("python", "duckdb", "snake"))
        assert live_tags(server) == [duckdb, python]
        tags_of = {}
        # Between batches the stand-in has sent all it may, so no post straddles a rule change.
        tags_of.update(dict.fromkeys(send(server, 150), [python, duckdb]))
        duckdb_id = next(i for i, r in server.rules.items() if r.get("tag") == duckdb)
        post_rules(server, {"delete": {"ids": [duckdb_id]}})
        tags_of.update(dict.fromkeys(send(server, 260), [python]))
        post_rules(server, {"add": [{"value": "snake", "tag": snake}]})
        tags_of.update(dict.fromkeys(send(server, 330), [python, snake]))
        assert live_tags(server) == [python, snake]
        sent = sorted(server.sent_ids)
        wait_until(lambda: sorted(s3_post_ids(s3)) == sent, 30, 0.5)
    finally:
        assert collector.stop() == 0, collector.log
        server.stop()
    assert sorted(s3_post_ids(s3)) == sent, "the bucket changed after SIGTERM"

    pool = len(created)
    hour_of = {i: created[int(i) % pool].replace(minute=0, second=0, microsecond=0) for i in sent}
    expected = Expected(
        posts=len(sent),
        per_rule=Counter(tag for tags in tags_of.values() for tag in tags),
        per_hour=Counter(hour_of.values()),
        hashtags=Counter(t.lower() for i in sent for t in hashtags[int(i) % pool]),
        authors=Counter(facts[int(i) % pool][0] for i in sent),
        post_types=Counter(facts[int(i) % pool][1] for i in sent),
    )
    assert len(tags_of) == expected.posts == 330
    assert dict(expected.per_rule) == {python: 330, duckdb: 150, snake: 70}
    assert len(expected.per_hour) == HOURS_SPREAD and len(expected.hashtags) > 20
    period = ["--from", f"{now - timedelta(hours=4):%Y-%m-%dT%H:%M:%SZ}"]
    period += ["--to", f"{now + timedelta(minutes=10):%Y-%m-%dT%H:%M:%SZ}"]
    yield Collected(expected, config, period, sorted(s3_objects(s3)))


def run_report(collected: Collected, tmp_path: Path, capsys) -> str:
    out = tmp_path / "report.html"
    argv = ["--config", str(collected.config), "--out", str(out), "--no-progress"]
    argv += ["--cache-dir", str(tmp_path / "cache"), *collected.period]
    assert report.main(argv) == 0
    objects = len(collected.object_keys)
    summary = f"{collected.expected.posts} posts from {objects} objects ({objects} downloaded"
    assert summary in capsys.readouterr().out
    return out.read_text()


def table_rows(section: str) -> list[list[str]]:
    body = section.split("<tbody>", 1)[1]
    return [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]


def report_counts(page: str) -> tuple[dict[str, int], dict[datetime, int]]:
    """The report's 'Posts per rule tag' and 'Posts per hour' tables, as a user reads them."""
    rule_table = page.split("<h2 id='rule_counts'>", 1)[1].split("</table>")[0]
    # The period (4 h 10 min) is charted and tabled per hour.
    hour_table = page.split("<details id='bucket_counts'><summary>Posts per hour", 1)[1]
    per_rule = {tag: int(n) for tag, n in table_rows(rule_table)}
    per_hour = {
        datetime.strptime(hour, "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=UTC): int(n)
        for hour, n in table_rows(hour_table.split("</table>")[0])
    }
    return per_rule, per_hour


def test_report_counts_equal_posts_sent_per_rule_and_per_hour(collected, tmp_path, capsys):
    expected = collected.expected
    page = run_report(collected, tmp_path, capsys)
    assert f"<tr><td>posts</td><td>{expected.posts}</td></tr>" in page
    assert f"<tr><td>distinct post ids</td><td>{expected.posts}</td></tr>" in page
    per_rule, per_hour = report_counts(page)
    assert per_rule == dict(expected.per_rule)
    assert per_hour == dict(expected.per_hour)


def test_example_queries_on_duckdb_over_the_reports_cache(collected, tmp_path, capsys):
    expected = collected.expected
    run_report(collected, tmp_path, capsys)
    start, end = (loader.parse_time(t) for t in collected.period[1::2])
    files = loader.cached_files(tmp_path / "cache", BUCKET, PREFIX, loader.Period(start, end))
    assert sorted(str(f.relative_to(tmp_path / "cache" / BUCKET)) for f in files) == sorted(
        collected.object_keys
    )
    con = loader.connect(allowed_directories=[tmp_path / "cache"])
    loader.athena_view(con, files)

    def query(name: str) -> list[tuple]:
        return con.execute(loader.example_query(name)).fetchall()

    hours = sorted((f"{hour:%Y-%m-%dT%H}", n) for hour, n in expected.per_hour.items())
    assert query("posts_per_hour") == hours
    rules = sorted(expected.per_rule.items(), key=lambda kv: (-kv[1], kv[0]))
    assert query("posts_per_rule") == rules
    top = sorted(expected.hashtags.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    assert query("top_hashtags") == top


def test_report_top_authors_and_post_types_equal_what_the_stand_in_sent(
    collected, tmp_path, capsys
):
    expected = collected.expected
    page = run_report(collected, tmp_path, capsys)
    authors = page.split("<h2 id='author_counts'>", 1)[1].split("</table>")[0]
    top = sorted(expected.authors.items(), key=lambda kv: (-kv[1], kv[0][0]))[:20]
    assert table_rows(authors) == [[f"@{name}", author_id, str(n)] for (author_id, name), n in top]
    types = page.split("<h2 id='post_type_counts'>", 1)[1].split("</table>")[0]
    assert {t: int(n) for t, n in table_rows(types)} == {
        t: expected.post_types.get(t, 0) for t in ("original", "reply", "quote", "repost")
    }
    assert all(expected.post_types[t] for t in ("original", "reply", "quote", "repost"))
