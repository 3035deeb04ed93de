"""Report and export benchmark: N posts in the local cache, then `collector report` and `export`.

    .venv/bin/python -m tests.bench.report_bench --posts 1000000

Writes the objects once (gzip level 1, 20,000 posts per object, the collector's layout and
names) under --cache-dir, then times `collector report --offline` and `collector export
--offline --format parquet` (a folder, partitioned by dt) each in a child process and prints
wall time and the child's peak RSS. Posts are the recorded samples with varied ids, times,
hashtags, mentions, languages, rule tags, authors (5,000, in includes.users), post types and
linked URLs (about 4 KB each).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "fakes" / "data" / "x_v2_filtered_stream.jsonl"
BUCKET = "bench-bucket"
PREFIX = "raw"
LANGS = ["en", "en", "en", "es", "ja", "pt", "fr", "de", "und"]
RULES = ["python", "rust", "duckdb"]
POST_TYPES = ["original", "original", "reply", "quote", "repost"]


def templates() -> list[dict]:
    return [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()]


REFERENCE_TYPES = {"reply": "replied_to", "quote": "quoted", "repost": "retweeted"}


def post_line(
    template: dict,
    post_id: int,
    created_at: datetime,
    rule_tags: list[str],
    hashtags: list[str] = (),
    mentions: list[str] = (),
    lang: str = "en",
    author: tuple[str, str] | None = None,
    post_type: str | None = None,
    urls: list[str] | None = None,
) -> bytes:
    """One stream message shaped like the template, with the given fields, `\\n`-terminated.

    author: (id, username), first in includes.users as X's author_id expansion puts it;
    post_type: "original", "reply", "quote" or "repost" (data.referenced_tweets);
    urls: expanded URLs in data.entities.urls. None keeps the template's.
    """
    data = dict(template["data"])
    data["id"] = str(post_id)
    data["created_at"] = created_at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    data["lang"] = lang
    entities = dict(data.get("entities") or {})
    entities["hashtags"] = [{"start": 0, "end": len(t) + 1, "tag": t} for t in hashtags]
    entities["mentions"] = [{"start": 0, "end": len(m) + 1, "username": m} for m in mentions]
    if urls is not None:
        entities["urls"] = [
            {"start": 0, "end": 23, "url": f"https://t.co/{i:010d}", "expanded_url": url}
            for i, url in enumerate(urls)
        ]
    data["entities"] = entities
    message = dict(template)
    if author is not None:
        user = {**template["includes"]["users"][0], "id": author[0], "username": author[1]}
        others = [u for u in template["includes"]["users"] if u["id"] != data["author_id"]]
        data["author_id"] = author[0]
        message["includes"] = {**template["includes"], "users": [user, *others]}
    if post_type is not None:
        kind = REFERENCE_TYPES.get(post_type)
        data["referenced_tweets"] = [{"type": kind, "id": str(post_id - 1)}] if kind else []
    message["data"] = data
    message["matching_rules"] = [{"id": str(1000 + i), "tag": t} for i, t in enumerate(rule_tags)]
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def object_path(root: Path, first: datetime, seq: int) -> Path:
    name = f"bench-{first:%Y%m%dT%H%M%SZ}-{seq:06d}.jsonl.gz"
    return root / BUCKET / PREFIX / f"dt={first:%Y-%m-%d}" / f"hour={first:%H}" / name


def generate(cache_dir: Path, posts: int, start: datetime, span: timedelta, per_object: int) -> int:
    """Write `posts` posts spread evenly over `span` from `start`; returns uncompressed bytes."""
    samples = templates()
    step = span / posts
    total = 0
    for seq, first_index in enumerate(range(0, posts, per_object)):
        first = start + step * first_index
        path = object_path(cache_dir, first, seq)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(first_index, min(first_index + per_object, posts)):
            lines.append(
                post_line(
                    samples[i % len(samples)],
                    10**18 + i,
                    start + step * i,
                    [RULES[i % len(RULES)]] + (["all"] if i % 2 else []),
                    [f"tag{i % 97}", f"topic{i % 13}"],
                    [f"user{i % 211}"],
                    LANGS[i % len(LANGS)],
                    author=(str(10**9 + i * 7919 % 5000), f"author{i * 7919 % 5000}"),
                    post_type=POST_TYPES[i % len(POST_TYPES)],
                    urls=[f"https://site{i % 50}.example/{i}"],
                )
            )
        block = b"".join(lines)
        total += len(block)
        path.write_bytes(gzip.compress(block, compresslevel=1))
    return total


def timed(command: list[str]) -> tuple[float, float, float]:
    """Run `command` in a child process: (wall s, CPU s (user + system), peak RSS in MiB).

    CPU seconds are what a small instance pays for, whatever else it runs."""
    t0 = time.monotonic()
    child = subprocess.Popen(command, cwd=REPO)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - t0
    if status != 0:
        raise SystemExit(f"{command[3]} failed with wait status {status}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--per-object", type=int, default=20_000)
    parser.add_argument("--report-only", action="store_true", help="do not time the export")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "ts-bench")
    args = parser.parse_args()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    span = timedelta(hours=24)
    marker = args.cache_dir / f".generated-v2-{args.posts}-{args.per_object}"
    if not marker.exists():
        t0 = time.monotonic()
        size = generate(args.cache_dir, args.posts, start, span, args.per_object)
        marker.write_text(str(size))
        print(f"generated {args.posts} posts, {size / 1e9:.2f} GB uncompressed, "
              f"in {time.monotonic() - t0:.0f} s")  # fmt: skip
    size = int(marker.read_text())
    period = ["--from", start.isoformat(), "--to", (start + span).isoformat()]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "collector.toml"
        config.write_text(f'[s3]\nbucket = "{BUCKET}"\nprefix = "{PREFIX}"\n')
        common = ["--config", str(config), "--offline", "--cache-dir", str(args.cache_dir)]
        runs = {
            "report": ["report", *common, *period, "--out", str(Path(tmp) / "report.html")],
            "export to Parquet": [
                "export", *common, *period, "--format", "parquet", "--out", str(Path(tmp) / "posts")
            ],
        }  # fmt: skip
        for what, arguments in runs.items():
            if what.startswith("export") and args.report_only:
                continue
            elapsed, cpu, peak_mib = timed([sys.executable, "-m", "collector", *arguments])
            print(
                f"{what} over {args.posts} posts ({size / 1e9:.2f} GB uncompressed): "
                f"{elapsed:.1f} s ({cpu:.1f} CPU s), peak RSS {peak_mib:.0f} MiB, "
                f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
