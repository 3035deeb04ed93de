"""The Athena example queries (collector/analysis/sql/) run unchanged on DuckDB over the cache."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

from collector.analysis import loader
from tests.bench import report_bench

START = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)


def cached_posts(tmp_path):
    report_bench.generate(tmp_path, posts=900, start=START, span=timedelta(hours=3), per_object=200)
    files = sorted(tmp_path.rglob("*.jsonl.gz"))
    messages = [
        json.loads(line) for f in files for line in gzip.decompress(f.read_bytes()).splitlines()
    ]
    return files, messages


def run(files, name):
    con = loader.connect(allowed_directories=[files[0].parents[3]])
    loader.athena_view(con, files)
    return con.execute(loader.example_query(name)).fetchall()


def test_posts_per_hour_on_duckdb(tmp_path):
    files, messages = cached_posts(tmp_path)
    expected = Counter(m["data"]["created_at"][:13] for m in messages)
    assert run(files, "posts_per_hour") == sorted(expected.items())
    assert sum(expected.values()) == 900 and len(expected) == 4  # 22h, 23h, 00h, 01h


def test_top_hashtags_on_duckdb(tmp_path):
    files, messages = cached_posts(tmp_path)
    expected = Counter(
        h["tag"].lower() for m in messages for h in m["data"]["entities"]["hashtags"]
    )
    rows = run(files, "top_hashtags")
    assert len(rows) == 20
    assert rows == sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:20]


def test_posts_per_rule_on_duckdb(tmp_path):
    files, messages = cached_posts(tmp_path)
    expected = Counter(r["tag"] for m in messages for r in m["matching_rules"])
    assert dict(run(files, "posts_per_rule")) == dict(expected)
    assert expected["python"] == 300 and expected["all"] == 450


def test_athena_ddl_projects_dt_and_hour_over_the_object_layout():
    ddl = (loader.SQL_DIR / "athena_table.sql").read_text()
    assert "PARTITIONED BY (dt string, hour string)" in ddl
    assert "'org.openx.data.jsonserde.JsonSerDe'" in ddl
    assert "'storage.location.template' = 's3://${bucket}/${prefix}/dt=${dt}/hour=${hour}/'" in ddl
    for key in ("projection.enabled", "projection.dt.type", "projection.hour.digits"):
        assert f"'{key}'" in ddl
