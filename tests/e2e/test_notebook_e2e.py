"""The optional notebook role on the sandbox host: JupyterLab answers on 127.0.0.1 only."""

from __future__ import annotations

import json
import shlex
import time

import pytest

from tests.conftest import free_port
from tests.sandbox.fixture import run_playbook

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

TOKEN = "notebook-e2e-token-0123456789abcdef"


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

    # The token is in a 0600 file of the twittersnake user, and in no Ansible output.
    mode = root(
        sandbox_world, "stat -c '%a %U' /etc/twittersnake/secrets/jupyter_server_config.json"
    )
    assert mode.split() == ["600", "twittersnake"]
    assert TOKEN not in result.stdout + result.stderr
    notebook = root(sandbox_world, "cat /var/lib/twittersnake/notebooks/analysis.ipynb")
    assert "from collector.analysis import loader" in notebook

    rerun = run_playbook(sandbox_world, "site.yml", extra_vars=extra)
    assert rerun.returncode == 0 and rerun.changed() == 0, rerun.stdout[-3000:]
