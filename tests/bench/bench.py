"""`make bench`: the whole collector against `curl -sN URL | gzip -1 > file` on the same stream.

Both runs replay the same posts (same seed) from the X API stand-in as fast as it can send.
The collector run is timed from the first byte the stand-in sends until the last post is in an
object in moto S3; the curl run until gzip has written its last byte. CPU seconds (user + sys)
are those of the collector process, and of bash + curl + gzip for the pipeline.

    python -m tests.bench.bench [--posts 100000] [--slow-s3 10] [--skip-collector] [--ledger-only]

It ends with the billing ledger's memory for a million ids in one UTC day, in its own process
(tests/bench/ledger_bench.py), beside a Python set of id strings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import boto3
from isal import igzip  # the counting below must not slow the machine more than needed

from collector.config import XConfig
from tests.conftest import REPO, MotoServer, free_port, wait_for_http

TOKEN = "bench-token"
BUCKET = "bench-bucket"
MB = 1_000_000
MOTO_BYTES_PER_SECOND = 40 * MB  # measured: a 30 MB put_object to moto takes ~0.8 s


REMOTE_NICE = -10  # the stand-ins for X and S3 run on other computers in reality


def as_remote(pid: int) -> None:
    """Raise the priority of a stand-in for a remote service (X, S3), so that the machine's
    other load starves it less and the run measures the pipeline under test. Both runs get
    the same; without root the priority stays as it is."""
    with contextlib.suppress(PermissionError):
        os.setpriority(os.PRIO_PROCESS, pid, REMOTE_NICE)


class FakeX:
    """The stand-in as a separate process, so it does not share a GIL with anything measured."""

    def __init__(self, workdir: Path, posts: int, close_after_count: bool) -> None:
        token_file = workdir / "x_token"
        token_file.write_text(TOKEN)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "tests.fakes.x_server", "--port", str(self.port)]
        command += ["--token-file", str(token_file), "--count", str(posts)]
        command += ["--close-after-count"] if close_after_count else []
        command += ["--rule", "python lang:en"]  # X answers 409 while no rule is live
        self.process = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL)
        as_remote(self.process.pid)
        wait_for_http(f"{self.url}/_fake/stats")

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/_fake/stats", timeout=10) as response:
            return json.load(response)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


class SlowProxy:
    """A TCP proxy in front of moto that caps throughput (bytes/s) in both directions."""

    def __init__(self, target_port: int, bytes_per_second: float) -> None:
        self.target_port = target_port
        self.bytes_per_second = bytes_per_second
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                time.sleep(len(data) / self.bytes_per_second)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                sock.close()


def run_curl_gzip(workdir: Path, posts: int) -> dict:
    x = FakeX(workdir, posts, close_after_count=True)
    out = workdir / "curl.jsonl.gz"
    pipeline = (
        # the fields the collector asks for, so both runs get the same lines
        f"curl -sN -H 'Authorization: Bearer {TOKEN}' '{x.url}/2/tweets/search/stream"
        f"?{urlencode(XConfig().fields.query())}'"
        f" | gzip -1 > {out}"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], check=True)
    done = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    stats = x.stats()
    x.stop()
    seconds = done - stats["first_byte_at"]
    return {
        "seconds": seconds,
        "bytes": stats["bytes_sent"],
        "posts": stats["sent"],
        "cpu_seconds": cpu,
    }


def write_config(workdir: Path, x_url: str, s3_url: str) -> Path:
    config = workdir / "collector.toml"
    config.write_text(
        f"""collector_id = "bench"
[x]
api_base_url = "{x_url}"
bearer_token_file = "{workdir / "x_token"}"
stream = "filter"
[[x.rules]]
value = "python"
tag = "python"
[spool]
dir = "{workdir / "spool"}"
[rotate]
max_records = 20000
max_bytes = 67108864
max_seconds = 1
[s3]
bucket = "{BUCKET}"
prefix = "tweets"
region = "us-east-1"
endpoint_url = "{s3_url}"
compression = "gzip"
compression_level = 1
"""
    )
    return config


def count_posts_in_s3(s3, seen: dict[str, int]) -> int:
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=BUCKET):
        for obj in page.get("Contents", []):
            if obj["Key"] not in seen and "/_events/" not in f"/{obj['Key']}":
                body = s3.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
                seen[obj["Key"]] = igzip.decompress(body).count(b"\n")
    return sum(seen.values())


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_collector(workdir: Path, posts: int, slow_s3: float, moto: MotoServer) -> dict:
    s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    s3_url = moto.url
    if slow_s3 > 1:
        # moto takes about 40 MB/s of PUT bodies on this machine; cap below that by the factor.
        proxy = SlowProxy(moto.port, bytes_per_second=MOTO_BYTES_PER_SECOND / slow_s3)
        s3_url = f"http://127.0.0.1:{proxy.port}"
    x = FakeX(workdir, posts, close_after_count=False)
    env = {**os.environ, "X_BEARER_TOKEN": TOKEN, "AWS_ENDPOINT_URL": s3_url}
    command = [sys.executable, "-m", "collector", "run", "--config"]
    command.append(str(write_config(workdir, x.url, s3_url)))
    log = (workdir / "collector.log").open("w")
    collector = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log)
    seen: dict[str, int] = {}
    peak = 0.0
    try:
        while count_posts_in_s3(s3, seen) < posts:
            if collector.poll() is not None:
                raise SystemExit(f"collector exited {collector.returncode}; see {log.name}")
            peak = max(peak, peak_rss_mb(collector.pid))
            time.sleep(0.2)
        done = time.time()
        peak = max(peak, peak_rss_mb(collector.pid))
        cpu = cpu_seconds(collector.pid)
    finally:
        collector.terminate()
        collector.wait(timeout=60)
    stats = x.stats()
    x.stop()
    return {
        "seconds": done - stats["first_byte_at"],
        "ingest_seconds": stats["last_post_at"] - stats["first_byte_at"],
        "bytes": stats["bytes_sent"],
        "posts": stats["sent"],
        "objects": len(seen),
        "peak_rss_mb": peak,
        "cpu_seconds": cpu,
    }


T3_MICRO_BASELINE = 0.2  # CPU seconds per second: 10 % of each of 2 vCPUs (AWS burstable docs)


def report(name: str, result: dict) -> None:
    rate = result["posts"] / result["seconds"]
    mbps = result["bytes"] / MB / result["seconds"]
    per_million = result["cpu_seconds"] / result["posts"] * 1_000_000
    print(f"{name:<22} {result['posts']:>9} posts {result['seconds']:8.2f} s {rate:10.0f} posts/s")
    print(f"{'':<22} {mbps:>9.1f} MB/s (uncompressed)")
    print(f"{'':<22} {per_million:>9.1f} CPU s (user+sys) per million posts")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--slow-s3", type=float, default=1.0, help="slow S3 down by this factor")
    parser.add_argument("--skip-collector", action="store_true", help="only the curl baseline")
    parser.add_argument("--ledger-only", action="store_true", help="only the ledger's memory")
    args = parser.parse_args(argv)
    if args.ledger_only:
        report_ledger()
        return
    # moto takes any credentials; never let the bench pick up a real profile.
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    os.environ.update(AWS_DEFAULT_REGION="us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)
    print(f"load average at start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="twittersnake-bench-") as tmp:
        workdir = Path(tmp)
        baseline = run_curl_gzip(workdir, args.posts)
        report("curl -sN | gzip -1", baseline)
        if args.skip_collector:
            return
        moto = MotoServer()
        moto.start()
        as_remote(moto.process.pid)
        try:
            result = run_collector(workdir, args.posts, args.slow_s3, moto)
        finally:
            moto.stop()
    report("collector -> S3", result)
    ingest = result["posts"] / result["ingest_seconds"]
    print(f"{'collector ingest':<22} {ingest:>9.0f} posts/s (first byte to last post sent)")
    print(f"{'ratio to curl|gzip':<22} {baseline['seconds'] / result['seconds']:>9.2f}x")
    print(f"{'collector peak RSS':<22} {result['peak_rss_mb']:>9.1f} MB (VmHWM)")
    per_million = result["cpu_seconds"] / result["posts"] * 1_000_000
    sustained = T3_MICRO_BASELINE / per_million * 1_000_000
    print(f"{'t3.micro baseline':<22} {sustained:>9.0f} posts/s sustained at the collector's CPU")
    print(f"{'':<22} {'':>9} per post (baseline: 0.2 CPU s/s, 10 % of 2 vCPUs)")
    print(f"{'objects in S3':<22} {result['objects']:>9}  (S3 slowed {args.slow_s3:g}x)")
    report_ledger()


def report_ledger() -> None:
    """The billing ledger's RSS for 1,000,000 ids, then a set of str's, each in its own process."""
    for extra in ([], ["--python-set"]):
        command = [sys.executable, "-m", "tests.bench.ledger_bench", *extra]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
        print(done.stdout.rstrip())


if __name__ == "__main__":
    main()
