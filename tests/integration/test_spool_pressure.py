"""The spool under pressure, with real processes: a full disk on a real small tmpfs, two
collectors on one spool, an S3 that accepts connections and never answers.

Each test asserts what a user observes: `collector status` (its exit code and reason), the
exit code and log line of a refused run, and the post ids in the bucket.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    run_cli,
    s3_post_ids,
    wait_until,
    write_config,
)
from tests.conftest import require
from tests.fakes.tcp_proxy import OutageProxy
from tests.fakes.x_server import FakeXServer
from tests.integration.test_gaps import shipped_events


@dataclass
class World:
    x: FakeXServer
    s3: object
    proxy: OutageProxy  # S3 through a switch: down (reset) or hang (blackhole)
    folder: Path

    def config(self, **kwargs) -> Path:
        return write_config(self.folder, self.x.url, s3_endpoint=self.proxy.url, **kwargs)

    def status(self, config: Path) -> tuple[int, dict]:
        done = run_cli("status", "--config", str(config), "--json")
        return done.returncode, json.loads(done.stdout or "{}")


@pytest.fixture
def world(s3, aws_env, tmp_path: Path) -> Iterator[World]:
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, keepalive_interval=1.0, count=0).start()
    proxy = OutageProxy(int(aws_env.url.rsplit(":", 1)[1])).start()
    yield World(server, s3, proxy, tmp_path)
    proxy.stop()
    server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 20 MiB tmpfs (root only): the spool's disk fills for real."""
    mount = tmp_path / "disk"
    mount.mkdir()
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True
    )
    require(done.returncode == 0, f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_second_run_on_the_same_spool_exits_78_naming_the_first_and_the_first_loses_nothing(
    world: World,
) -> None:
    config = world.config(max_records=100, max_seconds=1)
    world.x.rate, world.x.count = 200, 10_000
    first = CollectorProcess(config)
    try:
        wait_until(lambda: world.x.sent_ids, 20)
        second = CollectorProcess(config)
        assert second.wait(30) == 78
        refusal = [line for line in second.log.splitlines() if "in use" in line]
        assert len(refusal) == 1, second.log
        assert f"pid {first.process.pid}" in refusal[0] and "spool.dir" in refusal[0]
        assert "recovered" not in second.log  # it touched nothing in the spool
        time.sleep(2)  # the first keeps collecting and sealing beside the refused second
        assert "cannot seal" not in first.log
        code, status = world.status(config)
        assert status["pid"] == first.process.pid and code == 0, status
        world.x.count = len(world.x.sent_ids)  # stop the stand-in, then the collector
        wait_until(lambda: world.x._posts_taken >= world.x.count, 10)
        time.sleep(1.5)
    finally:
        assert first.stop() == 0
    ids = s3_post_ids(world.s3)
    assert sorted(ids) == sorted(set(ids)) and set(ids) == set(world.x.sent_ids)


@pytest.mark.slow
def test_a_hung_s3_is_degraded_within_two_rotation_periods_then_failing(world: World) -> None:
    rotation = 10  # s, the collector's rotate.max_seconds
    config = world.config(max_seconds=rotation, max_records=1_000_000)
    text = config.read_text().replace("[s3]\n", "[s3]\nfailing_after_seconds = 15\n")
    config.write_text(text)
    world.x.rate, world.x.count = 50, 100_000
    collector = CollectorProcess(config)
    try:
        wait_until(lambda: world.status(config)[1].get("files_uploaded", 0) >= 1, 40, 0.5)
        world.proxy.hang = True  # S3 accepts connections and never answers
        hung_at = time.monotonic()

        def degraded() -> dict | None:
            code, status = world.status(config)
            return status if code == 1 and status.get("health") == "degraded" else None

        status = wait_until(degraded, 2 * rotation + 5, 0.5)
        assert time.monotonic() - hung_at <= 2 * rotation + 5
        reason = status["health_reason"]
        assert f"s3://{BUCKET}/tweets" in reason and world.proxy.url in reason, reason
        assert "pending for" in reason and "without a confirmed upload" in reason
        assert status["health"] == "degraded"
        failing = wait_until(lambda: world.status(config)[1].get("health") == "failing", 40, 0.5)
        assert failing
        world.proxy.hang = False
        wait_until(lambda: world.status(config)[1].get("health") == "healthy", 90, 0.5)
        world.x.count = len(world.x.sent_ids)
        time.sleep(1.5)
    finally:
        assert collector.stop(60) == 0
    assert set(s3_post_ids(world.s3)) == set(world.x.sent_ids)


@pytest.mark.slow
def test_a_full_spool_disk_drains_by_itself_shows_in_status_and_a_stop_loses_nothing(
    world: World, small_disk: Path
) -> None:
    config = write_config(
        small_disk, world.x.url, s3_endpoint=world.proxy.url, max_records=200, max_seconds=1
    )
    world.proxy.down = True  # S3 unreachable: the spool fills
    world.x.rate, world.x.count = 2000, 1_000_000
    collector = CollectorProcess(config)
    spool = small_disk / "spool"
    try:

        def disk_full() -> dict | None:
            code, status = World.status(world, config)
            reason = status.get("health_reason") or ""
            return status if code == 1 and "spool disk full" in reason else None

        status = wait_until(disk_full, 60, 0.5)
        assert "bytes held in memory" in status["health_reason"]
        assert "oldest pending" in status["health_reason"]
        # status.json keeps being rewritten with the disk full: it tells the current state
        first_update = status["updated_at"]
        time.sleep(3)
        status = World.status(world, config)[1]
        assert status["updated_at"] != first_update and status["spool_disk_free_percent"] < 5
        # the rotation limit still caps the open file while it cannot be sealed
        for path in (spool / "open").iterdir():
            assert path.read_bytes().count(b"\n") <= 200

        world.proxy.down = False  # S3 is back: the spool drains by itself, posts flow again
        held = status["posts_received"]
        wait_until(lambda: World.status(world, config)[1]["posts_received"] > held + 2000, 60, 0.5)
        wait_until(lambda: World.status(world, config)[0] == 0, 60, 0.5)

        world.proxy.down = True  # full again, then stopped while full
        wait_until(disk_full, 60, 0.5)
    finally:
        code = collector.stop(60)
    assert code == 0
    assert "released the" in collector.log and "reserve" in collector.log
    assert "could not be written" not in collector.log
    received = json.loads((spool / "status.json").read_text())["posts_received"]

    world.proxy.down = False  # the next start ships what the stop left in the spool
    world.x.rate = 0
    world.x.count = len(world.x.sent_ids)
    again = CollectorProcess(config)
    try:
        wait_until(lambda: World.status(world, config)[1].get("pending_files") == 0, 60, 0.5)
        time.sleep(2)
    finally:
        assert again.stop(60) == 0
    # the first run's stop event was written after the reserve was released: both runs stopped
    stops = [e for e in shipped_events(world.s3, world.folder / "events") if e.event == "stop"]
    assert len(stops) == 2, collector.log[-3000:]
    ids = s3_post_ids(world.s3)
    # every post the first run received (the stream's first `received` posts) is in S3, once
    assert set(world.x.sent_ids[:received]) <= set(ids)
    assert len(ids) == len(set(ids))
