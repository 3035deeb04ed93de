"""Posts stored inside other posts' `includes.tweets` (the post a line replies to, quotes or
reposts): `collector compliance` checks their ids too, and `collector purge` drops a removed
one from the lines that carry it, which stay.

The object holds recorded stream lines (tests/fakes/data) in the collector's key layout on
moto; the stand-in answers the compliance jobs.
"""

from __future__ import annotations

import gzip
import json

from collector.analysis import compliance, purge
from collector.spool.layout import object_key
from tests.collector_support import BUCKET, TOKEN, write_config
from tests.conftest import REPO
from tests.fakes.x_server import FakeXServer

SAMPLES = REPO / "tests" / "fakes" / "data" / "x_v2_filtered_stream.jsonl"


def test_included_posts_are_checked_and_purged_from_the_lines_that_carry_them(
    s3, aws_env, tmp_path, capsys
) -> None:
    lines = [line for line in SAMPLES.read_bytes().splitlines() if b'"tweets":[' in line]
    messages = [json.loads(line) for line in lines]
    data_ids = {m["data"]["id"] for m in messages}
    included = [t["id"] for m in messages for t in m["includes"]["tweets"]]
    only_included = [i for i in included if i not in data_ids]
    assert len(lines) >= 3 and only_included
    gone, carrier = (
        only_included[0],
        next(m["data"]["id"] for m in messages if only_included[0] in str(m["includes"]["tweets"])),
    )
    deleted_line = next(m["data"]["id"] for m in messages if m["data"]["id"] != carrier)
    s3.create_bucket(Bucket=BUCKET)
    key = object_key("tweets", "test-20210401T155231Z-000001.jsonl.gz")
    s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(b"\n".join(lines) + b"\n"))
    server = FakeXServer(token=TOKEN, count=0).start()
    try:
        config = write_config(tmp_path, server.url, s3_endpoint=aws_env.url)
        server.control({"compliance_mark": {"ids": [gone, deleted_line], "reason": "deleted"}})
        argv = ["--config", str(config), "--all", "--cache-dir", str(tmp_path / "cache")]

        assert compliance.main([*argv, "--poll-seconds", "0", "--no-progress"]) == 0

        assert server.stats()["compliance_uploaded_ids"] == len(data_ids | set(included))
    finally:
        server.stop()
    assert "2 removed on X" in capsys.readouterr().out
    assert purge.main(["--config", str(config), "--apply"]) == 0
    out = capsys.readouterr().out
    assert "1 of 1 objects rewritten: 1 posts removed, 1 removed posts dropped from includes" in out
    kept = [json.loads(line) for line in gzip.decompress(
        s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    ).splitlines()]  # fmt: skip
    assert [m["data"]["id"] for m in kept] == [
        m["data"]["id"] for m in messages if m["data"]["id"] != deleted_line
    ]
    line = next(m for m in kept if m["data"]["id"] == carrier)  # the line stays, not its include
    assert gone not in [t["id"] for t in line["includes"]["tweets"]]
    assert (
        line["includes"]["users"]
        == next(m for m in messages if m["data"]["id"] == carrier)["includes"]["users"]
    )


def test_ids_in_lines_reads_each_lines_post_and_its_included_posts() -> None:
    line = (
        b'{"data":{"id":"3","text":"RT"},"includes":{"tweets":[{"id":"1"},{"id":"2"}],'
        b'"users":[{"id":"9"}]}}'
    )
    plain = b'{"data":{"id":"4","text":"a \\"tweets\\":[ in the text"}}'
    assert compliance.ids_in_lines([line, plain, b"not json"]) == {"1", "2", "3", "4"}
