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


def test_posts_compliant_leaves_the_same_posts_out_as_report_and_export():
    """The view's reasons are compliance.REMOVED_REASONS / GEO_REASONS, its results table
    columns compliance.RESULT_FIELDS (one source: collector/analysis/compliance.py)."""
    from collector.analysis import compliance

    view = (loader.SQL_DIR / "posts_compliant.sql").read_text()
    removed = ", ".join(f"'{reason}'" for reason in compliance.REMOVED_REASONS)
    assert f"c.reason NOT IN ({removed})" in view
    assert compliance.GEO_REASONS == ("scrub_geo",) and "c.reason = 'scrub_geo'" in view
    ddl = (loader.SQL_DIR / "athena_compliance_table.sql").read_text()
    columns = ddl.split("(\n", 1)[1].split("\n)", 1)[0]
    assert [line.strip().split()[0] for line in columns.splitlines()] == list(
        compliance.RESULT_FIELDS
    )


def test_the_example_queries_run_on_posts_compliant(tmp_path):
    files, messages = cached_posts(tmp_path)
    ids = [m["data"]["id"] for m in messages]
    results = files[0].parents[2] / "_compliance" / "dt=2026-11-28"
    results.mkdir(parents=True)
    rows = [(ids[0], "deleted"), (ids[1], "protected"), (ids[2], "scrub_geo")]
    (results / "1460000000000000001.jsonl").write_text(
        "".join(
            json.dumps({"id": i, "reason": r, "checked_at": "2026-11-28T03:00:00Z"}) + "\n"
            for i, r in rows
        )
    )
    con = loader.connect(allowed_directories=[files[0].parents[3]])
    loader.athena_view(con, files)
    loader.athena_compliance_view(con, sorted(results.glob("*.jsonl")))
    loader.compliant_view(con)
    kept = Counter(m["data"]["created_at"][:13] for m in messages[2:])
    query = loader.example_query("posts_per_hour").replace("FROM posts", "FROM posts_compliant")
    assert con.execute(query).fetchall() == sorted(kept.items())
    for name in ("top_hashtags", "posts_per_rule"):
        query = loader.example_query(name).replace("FROM posts", "FROM posts_compliant")
        assert con.execute(query).fetchall()
    geo = "SELECT data.geo.coordinates.coordinates FROM {} WHERE data.id = ?"
    assert con.execute(geo.format("posts"), [ids[2]]).fetchall() == [([-86.58216981, 34.75192228],)]
    assert con.execute(geo.format("posts_compliant"), [ids[2]]).fetchall() == [(None,)]
    assert con.execute(geo.format("posts_compliant"), [ids[3]]).fetchall() == [(None,)]  # none
    place = con.execute("SELECT data.geo.place_id FROM posts_compliant WHERE data.id = ?", [ids[4]])
    assert place.fetchall() == [(messages[4]["data"]["geo"]["place_id"],)]


def test_the_view_casts_data_to_the_type_of_the_posts_table():
    """Every field of posts.data (roles/athena/vars, equal to athena_table.sql) is in the
    view's CAST, in order and type: a field added to the table is a field of the view."""
    import importlib.util
    import re

    import yaml

    from tests.conftest import REPO

    module = REPO / "roles/athena/library/twittersnake_glue_table.py"
    spec = importlib.util.spec_from_file_location("twittersnake_glue_table", module)
    glue_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(glue_table)
    columns = yaml.safe_load((REPO / "roles/athena/vars/main.yml").read_text())["_athena_columns"]
    data = next(c["type"] for c in columns if c["name"] == "data")
    view = (loader.SQL_DIR / "posts_compliant.sql").read_text()
    cast = view.split(") AS ROW(", 1)[1].split(")) AS data", 1)[0]
    assert re.sub(r"\s+", " ", f"row({cast.strip()})").lower() == glue_table.presto_type(data)
    assert glue_table.presto_type("array<struct<tag:string>>") == "array(row(tag varchar))"
