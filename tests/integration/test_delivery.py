"""Delivery guarantees, end to end: `python -m collector run` between the X stand-in and moto S3.

Each test asserts what a user observes: the set of post ids in the bucket equals the set the
stand-in delivered (across disconnects, an S3 outage, SIGTERM, kill -9 and a restart).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    s3_objects,
    s3_post_ids,
    wait_until,
    write_config,
)
from tests.fakes.tcp_proxy import OutageProxy
from tests.fakes.x_server import FakeXServer


@dataclass
class World:
    x: FakeXServer
    s3: object
    moto_url: str
    tmp: Path

    def config(self, **kwargs) -> Path:
        return write_config(self.tmp, self.x.url, **kwargs)

    def in_s3(self) -> list[str]:
        return s3_post_ids(self.s3)

    def received(self) -> int:
        """posts_received in the running collector's status.json (rewritten every 2 s)."""
        try:
            return json.loads((self.tmp / "spool" / "status.json").read_text())["posts_received"]
        except (FileNotFoundError, ValueError, KeyError):
            return 0

    def wait_for_all_sent_in_s3(self, timeout: float = 40) -> list[str]:
        def delivered() -> list[str] | None:
            ids = self.in_s3()
            return ids if set(ids) >= set(self.x.sent_ids) else None

        return wait_until(delivered, timeout, 0.5)


def settle(server: FakeXServer) -> None:
    """Wait until the stand-in has sent `count` posts and is idle (a keep-alive followed them)."""
    wait_until(lambda: server._posts_taken >= server.count, 30)

    def idle() -> bool:
        keepalive, post = server.last_keepalive_at, server.last_post_at
        return keepalive is not None and (post is None or keepalive > post)

    wait_until(idle, 30, 0.05)


@pytest.fixture
def world(s3, aws_env, tmp_path: Path) -> Iterator[World]:
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, keepalive_interval=1.0, count=0).start()
    yield World(server, s3, aws_env.url, tmp_path)
    server.stop()


def test_every_post_reaches_s3_across_disconnects_errors_and_bad_lines(world: World) -> None:
    collector = CollectorProcess(world.config(max_records=200, max_seconds=1))
    try:
        wait_until(lambda: world.x.connections == 1, 20)
        world.x.count = 300
        wait_until(lambda: len(world.x.sent_ids) == 300)
        world.x.drop_after(40)  # the next connection is cut mid-line
        world.x.operational_disconnect()  # errors-only message, then the server closes
        wait_until(lambda: world.x.connections >= 2)
        world.x.count = 600
        wait_until(lambda: world.x.connections >= 3)  # reconnected after the cut line
        world.x.inject("malformed")
        world.x.inject("partial_errors")
        settle(world.x)
        world.x.fail_next(503, 1)  # the next attempt fails; tweepy backs off 5 s
        world.x.operational_disconnect()
        wait_until(lambda: world.x.connections >= 5, 20)
        world.x.count = 900
        settle(world.x)
        ids = world.wait_for_all_sent_in_s3()
    finally:
        assert collector.stop() == 0, collector.log
    assert set(ids) == set(world.x.sent_ids)
    assert len(ids) == len(set(ids)), "a post was uploaded twice"
    log = collector.log
    assert "quarantined a not-json line" in log
    assert "stream sent an error message (not data)" in log
    assert TOKEN not in log


def test_sigterm_seals_uploads_everything_pending_and_exits_0(world: World) -> None:
    # Nothing would be sealed for a minute: SIGTERM alone must get the posts to S3.
    collector = CollectorProcess(world.config(max_records=100_000, max_seconds=60))
    wait_until(lambda: world.x.connections == 1, 20)
    world.x.count = 2000
    wait_until(lambda: len(world.x.sent_ids) == 2000)
    wait_until(lambda: world.received() == 2000)
    started = time.monotonic()
    collector.signal(signal.SIGTERM)
    assert collector.wait(35) == 0, collector.log
    assert time.monotonic() - started < 30
    ids = world.in_s3()
    assert sorted(ids) == sorted(world.x.sent_ids)
    assert "everything received was uploaded" in collector.log


def test_an_s3_outage_delays_uploads_without_losing_posts(world: World, aws_env) -> None:
    proxy = OutageProxy(int(aws_env.url.rsplit(":", 1)[1])).start()
    collector = CollectorProcess(
        world.config(s3_endpoint=proxy.url, max_records=100, max_seconds=0.5)
    )
    try:
        wait_until(lambda: world.x.connections == 1, 20)
        proxy.down = True
        world.x.rate = 200
        world.x.count = 600
        wait_until(lambda: len(world.x.sent_ids) == 600, 20)
        assert world.in_s3() == []  # nothing got through while S3 was down
        proxy.down = False
        ids = world.wait_for_all_sent_in_s3(60)
        assert proxy.refused > 0
    finally:
        assert collector.stop() == 0, collector.log
        proxy.stop()
    assert sorted(ids) == sorted(world.x.sent_ids)


@pytest.mark.slow  # waits out the 30 s upload deadline
def test_sigterm_while_s3_is_down_exits_0_within_30_s_and_the_restart_uploads(
    world: World, aws_env
) -> None:
    proxy = OutageProxy(int(aws_env.url.rsplit(":", 1)[1])).start()
    config = world.config(s3_endpoint=proxy.url, max_records=100, max_seconds=0.5)
    collector = CollectorProcess(config)
    wait_until(lambda: world.x.connections == 1, 20)
    proxy.down = True
    world.x.count = 350
    wait_until(lambda: len(world.x.sent_ids) == 350)
    wait_until(lambda: world.received() == 350)
    started = time.monotonic()
    collector.signal(signal.SIGTERM)
    assert collector.wait(40) == 0, collector.log
    assert time.monotonic() - started <= 30
    assert "left in the spool" in collector.log
    proxy.down = False
    restarted = CollectorProcess(config)
    try:
        ids = world.wait_for_all_sent_in_s3(40)
    finally:
        assert restarted.stop() == 0, restarted.log
        proxy.stop()
    assert sorted(ids) == sorted(world.x.sent_ids)


def open_spool_files(world: World) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (world.tmp / "spool" / "open").iterdir()}


def test_kill_9_then_restart_loses_nothing_not_even_the_open_file(world: World) -> None:
    # Files seal by count (150) while posts stream in; the last, partial one stays in open/
    # (max_seconds 60), so what survives the kill there only reaches S3 through recovery.
    config = world.config(max_records=150, max_seconds=60)
    world.x.rate = 300
    world.x.count = 100_000
    collector = CollectorProcess(config)
    wait_until(lambda: len(world.x.sent_ids) > 500, 20)
    world.x.count = world.x._posts_taken  # pause
    if world.x.count % 150 == 0:
        world.x.count += 1  # at least one post in the open file
    settle(world.x)
    last_sent = world.x.sent_ids[-1].encode()

    def open_file_with_the_last_post() -> str | None:
        files = open_spool_files(world)
        return next((name for name, data in files.items() if last_sent in data), None)

    open_name = wait_until(open_file_with_the_last_post, 10, 0.05)
    collector.kill()
    in_open = [
        json.loads(line)["data"]["id"]
        for line in open_spool_files(world)[open_name].split(b"\n")[:-1]
    ]
    assert in_open and in_open[-1] == last_sent.decode()
    connections = world.x.connections
    restarted = CollectorProcess(config)
    try:
        wait_until(lambda: world.x.connections > connections, 20)
        # Only once the stand-in has noticed the killed reader's socket is dead (its keep-alives
        # fail) can no new post be written to it.
        wait_until(lambda: world.x.streams_open == 1, 20)
        world.x.count += 400
        settle(world.x)
    finally:
        # SIGTERM seals the restarted run's own open file and uploads everything pending.
        assert restarted.stop() == 0, restarted.log
    ids = world.in_s3()
    assert set(ids) == set(world.x.sent_ids)
    keys = list(s3_objects(world.s3))
    assert len(keys) == len(set(keys))
    assert f"recovered {open_name} from open/ into sealed/" in restarted.log


def test_sample_stream_with_zstd_lands_as_jsonl_zst_objects(world: World) -> None:
    collector = CollectorProcess(world.config(stream="sample", compression="zstd", rules=[]))
    try:
        wait_until(lambda: world.x.connections == 1, 20)
        world.x.count = 250
        wait_until(lambda: len(world.x.sent_ids) == 250)
        ids = world.wait_for_all_sent_in_s3()
    finally:
        assert collector.stop() == 0, collector.log
    assert sorted(ids) == sorted(world.x.sent_ids)
    keys = list(s3_objects(world.s3))
    assert all(k.startswith("tweets/dt=") and k.endswith(".jsonl.zst") for k in keys)
    assert all("/hour=" in k and "/test-1-" in k for k in keys)
