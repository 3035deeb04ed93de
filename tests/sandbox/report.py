"""What `make demo` ends with, once the collector is RUNNING and the first object is in S3:
supervisorctl status on the instance, the bucket, a few posts."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import zstandard

from tests.sandbox.world import Sandbox

SAMPLE_POSTS = 3


def decompress(key: str, body: bytes) -> bytes:
    if key.endswith(".gz"):
        return gzip.decompress(body)
    if key.endswith(".zst"):
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    return body


def bucket_objects(s3, bucket: str) -> list[dict]:
    objects = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        # posts only: connection events (`_events/`) are the report's business
        objects += [o for o in page.get("Contents", []) if "/_events/" not in f"/{o['Key']}"]
    return sorted(objects, key=lambda o: o["Key"])


def program_state(world: Sandbox, program: str = "twittersnake") -> str:
    """supervisord's state of the program (RUNNING, STARTING, FATAL...), "" if unknown."""
    out = world.ssh(f"sudo -n supervisorctl status {program}", check=False).stdout.split()
    return out[1] if len(out) > 1 else ""


def report(world: Sandbox, wait: float = 90) -> int:
    """Waits (up to `wait` s) until the collector is RUNNING and an object is in the bucket."""
    deadline = time.monotonic() + wait
    # RUNNING: up for collector_startsecs without exiting (STARTING before that).
    while program_state(world) != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    status = world.ssh("sudo -n supervisorctl status", check=False)
    print("== supervisorctl status on the sandbox instance")
    print((status.stdout + status.stderr).rstrip() or "(no output)")
    if program_state(world) != "RUNNING":
        print(f"== the collector is not RUNNING after {wait:.0f}s: see")
        print("   `.venv/bin/python -m tests.sandbox ssh sudo supervisorctl tail twittersnake`")
        return 1

    s3 = world.aws_client("s3")
    buckets = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    if not buckets:
        print("== no bucket in the sandbox (has site.yml run?)")
        return 1
    while not any(bucket_objects(s3, b) for b in buckets) and time.monotonic() < deadline:
        time.sleep(0.5)
    found = False
    for bucket in buckets:
        objects = bucket_objects(s3, bucket)
        size = sum(o["Size"] for o in objects)
        print(f"== s3://{bucket}: {len(objects)} objects, {size} bytes")
        for obj in objects[-5:]:
            print(f"   {obj['Key']}  {obj['Size']} bytes")
        if objects:
            found = True
            key = objects[-1]["Key"]
            body = decompress(key, s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            print(f"== a sample of the posts in {key}")
            for line in body.splitlines()[:SAMPLE_POSTS]:
                post = json.loads(line).get("data", {})
                text = " ".join(str(post.get("text", "")).split())[:100]
                print(f"   {post.get('id')}  {post.get('created_at', '')}  {text}")
    if not found:
        print(f"== no object in the bucket after {wait:.0f}s: see")
        print("   `.venv/bin/python -m tests.sandbox ssh sudo supervisorctl tail twittersnake`")
        return 1
    config = write_report_config(world, buckets[0])
    print("== see what was collected (HTML report with charts):")
    print(f"   {report_command(world, config)}")
    for line in NEXT_STEPS:
        print(line)
    return 0


# The tools live in the repository's virtualenv (make venv): every command printed names it.
DEPLOY = ".venv/bin/ansible-playbook site.yml -i inventory/sandbox -e @.sandbox/vars.json"
NEXT_STEPS = (
    "== change the rules (collector_x_rules in inventory/sandbox/group_vars/all/deploy.yml), then",
    f"   {DEPLOY} --tags rules",
    "== run the whole deploy again (changed=0 when nothing changed):",
    f"   {DEPLOY}",
    "== a shell on the sandbox instance:",
    "   .venv/bin/python -m tests.sandbox ssh",
)


def write_report_config(world: Sandbox, bucket: str) -> Path:
    """A collector config for `python -m collector report` here, aimed at the sandbox's moto."""
    config = world.state_dir / "report.toml"
    config.write_text(
        "# Written by `python -m tests.sandbox report`: reads the sandbox bucket from here.\n"
        'collector_id = "sandbox-collector"\n'
        "[x]\n"
        f'bearer_token_file = "{world.state_dir / "x_token"}"\n'
        "[spool]\n"
        f'dir = "{world.state_dir / "report-spool"}"\n'
        "[s3]\n"
        f'bucket = "{bucket}"\n'
        'prefix = "raw"\n'
        f'endpoint_url = "http://127.0.0.1:{world.ports.moto}"\n'
    )
    return config


def report_command(world: Sandbox, config: Path) -> str:
    """The command for the HTML report; it signs as moto's administrator through a 0600
    credentials file in the state directory (moto enforces IAM), so no key is on the line."""
    credentials = world.state_dir / "aws-credentials"
    key = world.admin_key()
    fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(
            "[default]\n"
            f"aws_access_key_id = {key.access_key_id}\n"
            f"aws_secret_access_key = {key.secret_access_key}\n"
        )
    out_html = config.with_name("report.html")
    return (
        f"AWS_SHARED_CREDENTIALS_FILE={relative(credentials)} "
        f".venv/bin/python -m collector report --config {relative(config)}"
        f" --since 24h --out {relative(out_html)}"
    )


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
