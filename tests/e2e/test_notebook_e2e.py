"""The optional notebook role on the sandbox host: JupyterLab answers on 127.0.0.1 only, runs as
its own user, who cannot read the collector's secrets nor write its spool, with a key that only
reads the collector's prefix."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time

import pytest
import yaml

from tests.conftest import free_port
from tests.sandbox.fixture import run_playbook

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

TOKEN = "notebook-e2e-token-0123456789abcdef"
USER = "twittersnake-notebook"
CONFIG_DIR = "/etc/twittersnake-notebook"


def root(world, command: str) -> str:
    result = world.ssh(f"sudo -n sh -c {shlex.quote(command)}", check=False, timeout=120)
    assert result.returncode == 0, f"{command!r}: {result.stdout}{result.stderr}"
    return result.stdout


def probe(world, host: str, port: int, path: str = "/api/status") -> str:
    """HTTP status from the instance itself ("refused" when nothing answers on host:port)."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        f"url = 'http://{host}:{port}{path}'\n"
        "try:\n"
        "    print(urllib.request.urlopen(url, timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
        "except OSError:\n"
        "    print('refused')\n"
    )
    return root(world, f"python3 -c {shlex.quote(script)}").strip()


def as_user(world, user: str, command: str) -> subprocess.CompletedProcess:
    return world.ssh(f"sudo -n -u {user} sh -c {shlex.quote(command)}", check=False, timeout=120)


def key_id(credentials: str) -> str:
    """aws_access_key_id of an AWS shared-credentials file's text."""
    (line,) = [line for line in credentials.splitlines() if line.startswith("aws_access_key_id")]
    return line.split("=", 1)[1].strip()


# Run as the notebook's user with JupyterLab's own environment: what a cell would do. It reads the
# bucket and prefix as the starter notebook does, waits for an object the collector shipped, reads
# it, and tries to write and delete under the prefix.
READ_ONLY_PROBE = """
import json, os, time
from pathlib import Path
import boto3, botocore.exceptions
from collector.analysis import report

source = report.read_source(Path(os.environ["TWITTERSNAKE_CONFIG"]))
s3 = boto3.client("s3", region_name=source.region, endpoint_url=source.endpoint_url or None)
prefix = source.prefix + "/dt="
deadline = time.monotonic() + 120
while not (listed := s3.list_objects_v2(Bucket=source.bucket, Prefix=prefix).get("Contents")):
    assert time.monotonic() < deadline, "no object under " + prefix
    time.sleep(2)
key = listed[0]["Key"]
out = {"read": len(s3.get_object(Bucket=source.bucket, Key=key)["Body"].read())}
for name, call in (
    ("put", lambda: s3.put_object(Bucket=source.bucket, Key=source.prefix + "/x", Body=b"x")),
    ("delete", lambda: s3.delete_object(Bucket=source.bucket, Key=key)),
):
    try:
        call()
        out[name] = "allowed"
    except botocore.exceptions.ClientError as error:
        out[name] = error.response["Error"]["Code"]
print(json.dumps(out))
"""


def test_jupyterlab_answers_on_loopback_only(sandbox_world):
    port = free_port()
    extra = {
        "instance_connect_user": "ubuntu",
        "twittersnake_notebook_enabled": True,
        "vault_notebook_token": TOKEN,
        "notebook_port": port,
    }
    result = run_playbook(sandbox_world, "site.yml", extra_vars=extra)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]

    # JupyterLab answers before supervisor's startsecs have passed (STARTING): wait for RUNNING.
    deadline = time.monotonic() + 60
    while (
        "RUNNING"
        not in (status := root(sandbox_world, "supervisorctl status twittersnake-notebook || true"))
        and time.monotonic() < deadline
    ):
        time.sleep(1)
    assert "RUNNING" in status, status
    assert probe(sandbox_world, "127.0.0.1", port, f"/api/status?token={TOKEN}") == "200"
    assert probe(sandbox_world, "127.0.0.1", port, "/api/status") in {"403", "401"}

    # Listening on 127.0.0.1 alone, and nothing answers on the host's other addresses.
    listeners = root(sandbox_world, f"ss -Hltn 'sport = :{port}'").split()
    assert f"127.0.0.1:{port}" in listeners
    assert not [a for a in listeners if a.endswith(f":{port}") and "127.0.0.1" not in a]
    addresses = json.loads(root(sandbox_world, "ip -j -4 addr show"))
    others = [
        info["local"]
        for link in addresses
        for info in link.get("addr_info", [])
        if not info["local"].startswith("127.")
    ]
    for address in others:
        assert probe(sandbox_world, address, port) == "refused", address

    # The token is in a 0600 file of the notebook's user, and in no Ansible output.
    mode = root(
        sandbox_world,
        f"stat -c '%a %U' {CONFIG_DIR}/secrets/jupyter_server_config.json",
    )
    assert mode.split() == ["600", USER]
    assert TOKEN not in result.stdout + result.stderr
    notebook = root(sandbox_world, "cat /var/lib/twittersnake-notebook/analysis.ipynb")
    # the starter notebook reads the collection through the analysis package's loader
    assert re.search(r"from collector\.analysis import [\w, ]*\bloader\b", notebook)

    assert_runs_as_its_own_user_with_a_read_only_key(sandbox_world)

    rerun = run_playbook(sandbox_world, "site.yml", extra_vars=extra)
    assert rerun.returncode == 0 and rerun.changed() == 0, rerun.stdout[-3000:]


def assert_runs_as_its_own_user_with_a_read_only_key(world) -> None:
    pid = root(world, "supervisorctl pid twittersnake-notebook").strip()
    assert root(world, f"ps -o user:32= -p {pid}").strip() == USER
    environ = root(world, f"tr '\\0' '\\n' < /proc/{pid}/environ").splitlines()
    env = dict(line.split("=", 1) for line in environ if "=" in line)
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == f"{CONFIG_DIR}/secrets/aws_credentials"
    assert env["TWITTERSNAKE_CONFIG"] == f"{CONFIG_DIR}/notebook.toml"

    # What the collector keeps to itself stays out of reach.
    for command in (
        "cat /etc/twittersnake/secrets/x_bearer_token",
        "cat /etc/twittersnake/secrets/aws_credentials",
        "cat /etc/twittersnake/collector.toml",
        "touch /var/lib/twittersnake/spool/notebook-was-here",
    ):
        refused = as_user(world, USER, command)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, (command, refused)
    assert "notebook-was-here" not in root(world, "ls -a /var/lib/twittersnake/spool")

    # Its key is the notebook's from provisioning, not the collector's.
    notebook_key = key_id(root(world, f"cat {env['AWS_SHARED_CREDENTIALS_FILE']}"))
    collector_key = key_id(root(world, "cat /etc/twittersnake/secrets/aws_credentials"))
    stored = yaml.safe_load((world.state_dir / "notebook-credentials.yml").read_text())
    assert notebook_key == stored["notebook_aws_access_key_id"] != collector_key

    # It reads what the collector shipped and may neither write nor delete.
    names = ("HOME", "PYTHONPATH", "TWITTERSNAKE_CONFIG", "AWS_SHARED_CREDENTIALS_FILE")
    assigns = " ".join(f"{name}={shlex.quote(env[name])}" for name in names)
    python = "/opt/conda/envs/twittersnake/bin/python"
    probe = as_user(
        world,
        USER,
        f"cd {env['HOME']} && env AWS_CONFIG_FILE=/dev/null {assigns} {python} -c "
        + shlex.quote(READ_ONLY_PROBE),
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    outcome = json.loads(probe.stdout.splitlines()[-1])
    assert outcome["read"] > 0
    assert (outcome["put"], outcome["delete"]) == ("AccessDenied", "AccessDenied")
