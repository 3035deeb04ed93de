"""`collector compliance`: X's batch compliance jobs over the ids the collector shipped to S3.

The stand-in streams to `python -m collector run`, which ships to moto; the test then marks
some of the delivered ids deleted, protected or scrub_geo in the stand-in, runs the command,
and reads the result objects under {prefix}/_compliance/ back from S3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from collector.analysis import compliance
from collector.config import TWEET_FIELDS, load_config
from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    s3_post_ids,
    wait_until,
    write_config,
)
from tests.fakes.x_server import FakeXServer

POSTS = 120


@dataclass
class Archive:
    config: Path
    server: FakeXServer
    ids: list[str]
    period: list[str]
    cache: Path


@pytest.fixture
def archive(s3, aws_env, tmp_path: Path) -> Iterator[Archive]:
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, count=POSTS, keepalive_interval=1.0).start()
    config = write_config(tmp_path, server.url, s3_endpoint=aws_env.url, max_records=40)
    fields = json.dumps([*TWEET_FIELDS, "geo"])  # the geotag scrub_geo is about, and its place
    places = 'expansions = ["author_id", "geo.place_id"]\nplace_fields = ["country_code", "geo"]\n'
    config.write_text(
        config.read_text().replace("[x]\n", f"[x]\ntweet_fields = {fields}\n{places}", 1)
    )
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: len(server.sent_ids) == POSTS, 30)
        wait_until(lambda: sorted(s3_post_ids(s3)) == sorted(server.sent_ids), 30, 0.5)
    finally:
        assert collector.stop() == 0, collector.log
    now = datetime.now(UTC)
    period = ["--from", f"{now - timedelta(hours=1):%Y-%m-%dT%H:%M:%SZ}"]
    period += ["--to", f"{now + timedelta(minutes=5):%Y-%m-%dT%H:%M:%SZ}"]
    yield Archive(config, server, list(server.sent_ids), period, tmp_path / "cache")
    server.stop()


def mark(archive: Archive) -> dict[str, str]:
    """Some delivered ids marked on X: id -> reason."""
    marked = {}
    others = archive.ids[5:50] + archive.ids[53:]
    geotagged = [i for i in others if b'"place_id"' in archive.server.post_body(int(i))]
    for reason, ids in (
        ("deleted", archive.ids[0:5]),
        ("protected", archive.ids[50:53]),
        ("scrub_geo", geotagged[:2]),
    ):
        archive.server.control({"compliance_mark": {"ids": ids, "reason": reason}})
        marked.update(dict.fromkeys(ids, reason))
    return marked


def run(archive: Archive, *extra: str) -> int:
    argv = ["--config", str(archive.config), *archive.period, "--cache-dir", str(archive.cache)]
    return compliance.main([*argv, "--poll-seconds", "0", *extra])


def stored_results(s3) -> dict[str, dict]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="tweets/_compliance/").get("Contents", [])
    results = {}
    for item in listed:
        assert item["Key"].startswith(f"tweets/_compliance/dt={datetime.now(UTC):%Y-%m-%d}/")
        body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().decode()
        for line in body.splitlines():
            row = json.loads(line)
            results[row["id"]] = row
    return results


def test_results_in_s3_hold_exactly_the_ids_x_marked(archive, s3, capsys) -> None:
    marked = mark(archive)
    archive.server.control({"compliance_mark": {"ids": ["1"], "reason": "deleted"}})  # not ours

    assert run(archive) == 0

    results = stored_results(s3)
    assert {i: r["reason"] for i, r in results.items()} == marked
    row = results[archive.ids[0]]
    assert set(row) == set(compliance.RESULT_FIELDS)
    assert row["action"] == "delete" and row["job_id"] and row["redacted_at"]
    out = capsys.readouterr().out
    assert f"{POSTS} post ids from" in out
    assert "8 removed on X" in out and "2 geotags scrubbed" in out
    assert archive.server.stats()["compliance_uploaded_ids"] == POSTS
    last = compliance.read_last_run(load_config(archive.config).spool.dir)
    assert last["ok"] and last["ids_checked"] == POSTS and last["removed"] == 8


def test_all_checks_the_whole_archive_in_one_listing(archive, s3) -> None:
    marked = mark(archive)
    argv = ["--config", str(archive.config), "--cache-dir", str(archive.cache)]

    assert compliance.main([*argv, "--poll-seconds", "0", "--all", "--no-progress"]) == 0

    assert {i: r["reason"] for i, r in stored_results(s3).items()} == marked
    last = compliance.read_last_run(load_config(archive.config).spool.dir)
    assert last["ok"] and last["ids_checked"] == POSTS and last["period_start"] == "archive"
    assert compliance.main([*argv, "--all", "--to", "2026-12-01"]) == 78


def test_a_second_run_while_one_is_going_ends_at_once_and_records_nothing(archive, capsys):
    import fcntl
    import os

    spool = load_config(archive.config).spool.dir
    held = compliance.StateDir(spool).lock()  # a run in progress (another open file: a conflict)
    try:
        assert run(archive, "--no-progress") == os.EX_TEMPFAIL
    finally:
        fcntl.flock(held, fcntl.LOCK_UN)
        os.close(held)
    err = capsys.readouterr().err
    assert f"another compliance run (pid {os.getpid()}) holds {spool}/compliance/.lock" in err
    assert compliance.read_last_run(spool) is None
    assert archive.server.stats().get("compliance_jobs", 0) == 0
    assert run(archive, "--no-progress") == 0  # once it is done


def test_jobs_over_the_upload_limit_are_split(archive, s3) -> None:
    marked = mark(archive)
    archive.server.control({"compliance_max_ids": 50})

    assert run(archive, "--max-ids", "50") == 0

    assert archive.server.stats()["compliance_jobs"] == 3  # 50 + 50 + 20, one after the other
    assert {i: r["reason"] for i, r in stored_results(s3).items()} == marked


def test_a_job_created_before_a_crash_is_picked_up_again(archive, s3) -> None:
    marked = mark(archive)
    archive.server.control({"compliance_polls": 3})
    cfg = load_config(archive.config, streaming=False)

    class Crash(Exception):
        pass

    def crash(seconds: float) -> None:
        raise Crash  # the process dies while it waits for X

    runner = compliance.Runner(
        cfg, TOKEN, s3, compliance.StateDir(cfg.spool.dir), lambda _: None, 0, sleep=crash
    )
    from collector.analysis.loader import Period

    now = datetime.now(UTC)
    state = runner.start(
        Period(now - timedelta(hours=1), now + timedelta(minutes=5)), archive.cache
    )
    with pytest.raises(Crash):
        runner.execute(state)
    assert stored_results(s3) == {}
    assert archive.server.stats()["compliance_jobs"] == 1

    assert run(archive) == 0

    # the same job, not a new one; then one for the period asked for
    assert archive.server.stats()["compliance_jobs"] == 2
    assert {i: r["reason"] for i, r in stored_results(s3).items()} == marked


def test_a_leftover_run_is_finished_and_said_then_the_period_asked_is_checked(
    archive, s3, capsys
) -> None:
    archive.server.control({"compliance_fail_next": "Job failed: storage unavailable"})
    old = ["--since", "2h"]
    argv = ["--config", str(archive.config), "--cache-dir", str(archive.cache)]
    assert compliance.main([*argv, *old, "--poll-seconds", "0", "--no-progress"]) == 1
    leftover = compliance.StateDir(load_config(archive.config).spool.dir).load()
    capsys.readouterr()

    marked = mark(archive)
    assert run(archive, "--no-progress") == 0

    captured = capsys.readouterr()
    assert f"finishing run {leftover.run_id} ({leftover.period_start} to " in captured.err
    lines = captured.out.splitlines()
    assert lines[0].startswith(f"compliance run {leftover.run_id} ({leftover.period_start} to ")
    asked = f"({archive.period[1]} to {archive.period[3]}): {POSTS} post ids from"
    assert len(lines) == 2 and asked in lines[1]
    last = compliance.read_last_run(load_config(archive.config).spool.dir)
    assert last["ok"] and last["period_start"] == archive.period[1]
    assert {i: r["reason"] for i, r in stored_results(s3).items()} == marked


def test_a_leftover_run_failing_again_says_the_period_asked_was_not_checked(
    archive, capsys
) -> None:
    for _ in range(2):
        archive.server.control({"compliance_fail_next": "Job failed: storage unavailable"})
        assert run(archive, "--no-progress") == 1
    err = capsys.readouterr().err
    assert (
        f"storage unavailable; the period asked for ({archive.period[1]} to {archive.period[3]})"
        " was not checked: the next run finishes run " in err
    )


def test_a_failed_job_says_x_reason_and_is_kept_as_the_last_run(archive, s3, capsys) -> None:
    archive.server.control({"compliance_fail_next": "Internal error while processing the job"})

    assert run(archive) == 1

    err = capsys.readouterr().err
    assert "failed: Internal error while processing the job" in err
    last = compliance.read_last_run(load_config(archive.config).spool.dir)
    assert last["ok"] is False and "Internal error while processing the job" in last["error"]
    assert stored_results(s3) == {}


def test_report_and_export_leave_removed_posts_out_and_blank_scrubbed_geotags(
    archive, s3, tmp_path, capsys
) -> None:
    from collector.analysis import export, report

    marked = mark(archive)
    removed = {i for i, reason in marked.items() if reason != "scrub_geo"}
    scrubbed = {i for i, reason in marked.items() if reason == "scrub_geo"}
    assert run(archive, "--no-progress") == 0
    job_id = next(iter(stored_results(s3).values()))["job_id"]
    capsys.readouterr()
    base = ["--config", str(archive.config), "--cache-dir", str(archive.cache), "--no-progress"]
    base += archive.period

    assert report.main([*base, "--out", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert f"compliance: {len(removed)} posts left out" in out
    assert f"{len(scrubbed)} geotags blanked" in out and f"(job {job_id})" in out
    assert f"{POSTS - len(removed)} posts from" in out
    page = (tmp_path / "r.html").read_text()
    assert "8 posts left out" in page
    # X billed all it delivered, the 8 removed since included: 120 posts, $0.60
    assert f"<td>total</td><td>{POSTS:,}</td><td>$0.60</td>" in page

    assert export.main([*base, "--out", str(tmp_path / "kept.parquet")]) == 0
    out = capsys.readouterr().out
    assert f"compliance: {len(removed)} posts left out" in out
    rows = dict(
        duckdb.sql(f"SELECT id, geo_coordinates FROM '{tmp_path / 'kept.parquet'}'").fetchall()
    )
    assert set(rows) == set(archive.ids) - removed
    assert all(rows[i] is None for i in scrubbed)
    places = duckdb.sql(
        f"SELECT id, place_full_name, place_country_code, place_bbox "
        f"FROM '{tmp_path / 'kept.parquet'}'"
    ).fetchall()
    assert all(place == [None, None, None] for i, *place in places if i in scrubbed)
    assert any(place[0] for i, *place in places if i not in scrubbed)  # others keep theirs
    with_geo = [
        i for i in archive.ids
        if b'"coordinates":{' in archive.server.post_body(int(i)) and i not in marked
    ]  # fmt: skip
    assert with_geo and all(rows[i] for i in with_geo)  # others keep theirs

    assert export.main([*base, "--out", str(tmp_path / "all.csv"), "--include-removed"]) == 0
    out = capsys.readouterr().out
    assert f"NOT applied (--include-removed): {len(removed)} posts removed on X" in out
    ids = duckdb.sql(
        f"SELECT id::VARCHAR FROM read_csv('{tmp_path / 'all.csv'}', all_varchar=true)"
    )
    assert {i for (i,) in ids.fetchall()} == set(archive.ids)


def test_the_athena_view_leaves_removed_posts_out_on_duckdb(archive, s3) -> None:
    """posts_compliant.sql, as the athena role creates it, over the objects the collector
    shipped and the results `collector compliance` stored (both as S3 holds them)."""
    from collector.analysis import loader

    marked = mark(archive)
    assert run(archive, "--no-progress") == 0
    cfg = load_config(archive.config, streaming=False)
    results = compliance.list_results(s3, BUCKET, cfg.s3.prefix)
    assert results
    posts = loader.list_objects(s3, BUCKET, cfg.s3.prefix, loader.Period.last(timedelta(hours=2)))
    cache = archive.cache / "athena"
    for objects, layout in (
        (posts, loader.object_key_problem),
        (results, compliance.result_key_problem),
    ):
        loader.sync_cache(
            s3, BUCKET, cfg.s3.prefix, None, cache, progress=False, objects=objects,
            key_problem=layout,
        )  # fmt: skip
    con = loader.connect(allowed_directories=[cache])
    loader.athena_view(con, sorted(cache.rglob("dt=*/hour=*/*.jsonl*")))
    loader.athena_compliance_view(con, sorted(cache.rglob("_compliance/dt=*/*.jsonl")))
    loader.compliant_view(con)

    geo = dict(con.execute("SELECT data.id, data.geo FROM posts_compliant").fetchall())
    removed = {i for i, reason in marked.items() if reason != "scrub_geo"}
    assert set(geo) == set(archive.ids) - removed
    scrubbed = [i for i, reason in marked.items() if reason == "scrub_geo"]
    assert scrubbed and all(geo[i] is None for i in scrubbed)
    raw = dict(con.execute("SELECT data.id, data.geo FROM posts").fetchall())
    assert all(raw[i] and raw[i]["place_id"] for i in scrubbed)  # the raw table keeps them
    kept = [i for i in archive.ids if i not in marked and raw[i]]
    assert kept and all(geo[i] == raw[i] for i in kept)


def test_collector_status_shows_the_last_run_and_a_failed_one_degrades_it(archive) -> None:
    from tests.collector_support import run_cli

    collector = CollectorProcess(archive.config)
    try:
        wait_until(lambda: run_cli("status", "--config", str(archive.config)).returncode == 0)
        archive.server.control({"compliance_fail_next": "Job failed: storage unavailable"})
        assert run(archive, "--no-progress") == 1
        failed = run_cli("status", "--config", str(archive.config))
        assert failed.returncode == 1
        first = failed.stdout.splitlines()[0]
        assert "degraded: compliance run failed at" in first
        assert first.endswith("Job failed: storage unavailable")
        fields = dict(line.split(None, 1) for line in failed.stdout.splitlines()[1:])
        assert fields["health"] == "degraded"
        assert fields["health_reason"] == first.split("degraded: ", 1)[1]
        shown = json.loads(run_cli("status", "--config", str(archive.config), "--json").stdout)
        assert shown["health"] == "degraded" and shown["healthy"] is False
        assert shown["health_reason"].endswith("Job failed: storage unavailable")

        mark(archive)
        assert run(archive, "--no-progress") == 0  # resumes: a new job for the failed one
        ok = run_cli("status", "--config", str(archive.config))
        assert ok.returncode == 0, ok.stdout
        shown = next(
            line for line in ok.stdout.splitlines() if line.split()[:1] == ["compliance_last_run"]
        )
        assert f"{POSTS} ids checked, 8 removed, 2 geotags scrubbed" in shown
        fields = dict(line.split(None, 1) for line in ok.stdout.splitlines()[1:])
        assert fields["health"] == "healthy" and fields["compliance_last_run_ok"] == "True"
        assert f"ok at {fields['compliance_last_run_at']}: " in shown

        # The timers' schedule next to the config: a last success 40 h ago is overdue.
        spool = load_config(archive.config).spool.dir
        last_file = spool / "compliance" / "last_run.json"
        last = json.loads(last_file.read_text())
        last["finished_at"] = f"{datetime.now(UTC) - timedelta(hours=40):%Y-%m-%dT%H:%M:%SZ}"
        last_file.write_text(json.dumps(last))
        unscheduled = run_cli("status", "--config", str(archive.config))
        assert unscheduled.returncode == 0, unscheduled.stdout  # no timer: no promise
        schedule = archive.config.parent / "compliance-schedule.json"
        schedule.write_text(json.dumps({"overdue_hours": "36", "daily_since": "30d"}))
        late = run_cli("status", "--config", str(archive.config), "--json")
        assert late.returncode == 1
        shown = json.loads(late.stdout)
        reason = (
            f"compliance overdue: last successful run 40 h ago ({last['finished_at']}), over 36 h"
        )
        assert shown["health"] == "degraded" and shown["health_reason"].startswith(reason)
        assert f"degraded: {reason}" in shown["verdict"]
        last_file.unlink()  # never ran: counted from the collector's start (seconds ago)
        assert run_cli("status", "--config", str(archive.config)).returncode == 0
    finally:
        assert collector.stop() == 0, collector.log


def test_compliance_purge_and_report_use_the_key_of_the_configs_credentials_file(
    archive, s3, tmp_path, monkeypatch, capsys
) -> None:
    """On the instance the timers and `sudo -u twittersnake ...` have no AWS key in their
    environment: the collector's key is in the file s3.credentials_file names, as for `check`."""
    from collector.analysis import purge, report

    mark(archive)
    credentials = tmp_path / "aws_credentials"
    credentials.write_text("[default]\naws_access_key_id = testing\naws_secret_access_key = t\n")
    archive.config.write_text(
        archive.config.read_text().replace("[s3]\n", f'[s3]\ncredentials_file = "{credentials}"\n')
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))

    assert run(archive, "--no-progress") == 0
    assert len(stored_results(s3)) == 10
    assert purge.main(["--config", str(archive.config)]) == 0
    assert "8 posts removed" in capsys.readouterr().out
    base = ["--config", str(archive.config), "--cache-dir", str(archive.cache), "--no-progress"]
    assert report.main([*base, *archive.period, "--out", str(tmp_path / "r.html")]) == 0
    assert "compliance: 8 posts left out" in capsys.readouterr().out

    credentials.write_text("[other]\n")
    assert run(archive, "--no-progress") == 78
    err = capsys.readouterr().err
    assert f"s3.credentials_file {credentials}: not an AWS credentials file with [default]" in err


def test_the_notebooks_first_cell_leaves_removed_posts_out_and_says_so(
    archive, tmp_path, monkeypatch, capsys
) -> None:
    from tests.conftest import REPO

    mark(archive)
    assert run(archive, "--no-progress") == 0
    capsys.readouterr()
    notebook = json.loads((REPO / "roles/notebook/files/analysis.ipynb").read_text())
    first = next(cell for cell in notebook["cells"] if cell["cell_type"] == "code")
    monkeypatch.setenv("TWITTERSNAKE_CONFIG", str(archive.config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    exec("".join(first["source"]), {})  # noqa: S102 (the notebook's own cell, as Jupyter runs it)

    out = capsys.readouterr().out
    assert "compliance: 8 posts left out (deleted," in out
    assert f"{POSTS - 8} posts from" in out


def test_a_token_x_refuses_names_the_token_file(archive, capsys) -> None:
    cfg = load_config(archive.config, streaming=False)
    cfg.x.bearer_token_file.write_text("not-the-token\n")

    assert run(archive, "--no-progress") == 1

    err = capsys.readouterr().err
    assert "X refused the bearer token (401 Unauthorized): check the token in " in err
    assert f"x.bearer_token_file {cfg.x.bearer_token_file}" in err and "not-the-token" not in err
