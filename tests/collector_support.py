"""Helpers for the collector tests: a config file, the collector as a process, posts in S3."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import zstandard

REPO = Path(__file__).resolve().parent.parent
TOKEN = "t0ken-SECRET-abc123"
BUCKET = "collector-test-bucket"


def x_server_fixture(**knobs):
    """A pytest fixture: an X stand-in accepting TOKEN, started with `knobs` (FakeXServer's
    keyword arguments) for one test and stopped after it.

    Use in a test module: `x_server = x_server_fixture(count=0)`."""
    import pytest

    from tests.fakes.x_server import FakeXServer

    @pytest.fixture
    def x_server() -> Iterator[FakeXServer]:
        server = FakeXServer(token=TOKEN, **knobs).start()
        yield server
        server.stop()

    return x_server


def wait_until(condition: Callable[[], object], timeout: float = 20.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {condition}")
        time.sleep(interval)


def wait_until_steady(value: Callable[[], object], steady_for: float, timeout: float = 20.0):
    """The value once it has stayed the same for `steady_for` seconds (polled every 0.1 s)."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < steady_for:
        if time.monotonic() > deadline:
            raise AssertionError(f"still changing after {timeout} s: {value} (last {last!r})")
        time.sleep(0.1)
        current = value()
        if current != last:
            last, since = current, time.monotonic()
    return last


def write_config(
    folder: Path,
    x_url: str,
    *,
    s3_endpoint: str = "",
    bucket: str = BUCKET,
    stream: str = "filter",
    rules: list[tuple[str, str]] = (("python lang:en", "python"),),
    max_records: int = 500,
    max_bytes: int = 64 * 1024 * 1024,
    max_seconds: float = 1,
    compression: str = "gzip",
    extra: str = "",
    x_extra: str = "",
) -> Path:
    token_file = folder / "x_bearer_token"
    token_file.write_text(TOKEN + "\n")
    rules_toml = "".join(
        f"\n[[x.rules]]\nvalue = {json.dumps(v)}\ntag = {json.dumps(t)}\n" for v, t in rules
    )
    text = f"""collector_id = "test-1"
{extra}
[x]
api_base_url = "{x_url}"
bearer_token_file = "{token_file}"
stream = "{stream}"
{x_extra}
{rules_toml}
[spool]
dir = "{folder / "spool"}"

[rotate]
max_records = {max_records}
max_bytes = {max_bytes}
max_seconds = {max_seconds}

[s3]
bucket = "{bucket}"
prefix = "tweets"
region = "us-east-1"
endpoint_url = "{s3_endpoint}"
compression = "{compression}"
compression_level = 1
"""
    path = folder / "collector.toml"
    path.write_text(text)
    return path


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "collector", *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class CollectorProcess:
    """`python -m collector run --config PATH` as a child process, its output in a log file."""

    def __init__(self, config: Path, env: dict | None = None, clock_file: Path | None = None):
        """clock_file: run under tests.clocked, whose clock the file moves (OffsetClock)."""
        self.config = config
        self.log_path = config.parent / f"collector-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in wait)
        program = ["collector"] if clock_file is None else ["tests.clocked", str(clock_file)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", *program, "run", "--config", str(config)],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 40) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._log.close()

    def stop(self, timeout: float = 40) -> int:
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self._log.close()


def object_lines(body: bytes, key: str) -> list[bytes]:
    if key.endswith(".gz"):
        body = gzip.decompress(body)
    elif key.endswith(".zst"):
        body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
    assert body.endswith(b"\n") or not body, f"{key} does not end with a newline"
    return body.split(b"\n")[:-1]


def s3_objects(s3, bucket: str = BUCKET, events: bool = False) -> dict[str, bytes]:
    """Key -> body of every post object; connection events (`_events/`) only when asked."""
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            if ("/_events/" in f"/{item['Key']}") != events:
                continue
            objects[item["Key"]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return objects


def s3_post_ids(s3, bucket: str = BUCKET) -> list[str]:
    """Ids of all posts in all objects, duplicates kept (so a test can see them)."""
    ids = []
    for key, body in s3_objects(s3, bucket).items():
        ids.extend(json.loads(line)["data"]["id"] for line in object_lines(body, key))
    return ids
