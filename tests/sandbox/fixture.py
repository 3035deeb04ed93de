"""pytest fixture: a sandbox on free ports for the session, and ansible-playbook against it.

    def test_something(sandbox_world):
        result = run_playbook(sandbox_world, "site.yml", "--check", extra_vars={...})
        assert result.returncode == 0 and result.changed("twittersnake-collector") == 0

Registered in tests/conftest.py (pytest_plugins), so any test module can ask for `sandbox_world`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sandbox import paths
from tests.sandbox.world import NEEDED_TOOLS, Ports, Sandbox

RECAP = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


def require_sandbox_prerequisites() -> None:
    """Skip locally, fail under CI=true, when this machine cannot run the sandbox."""
    from tests.conftest import require

    require(sys.platform == "linux", "the sandbox runs on Linux only")
    require(os.geteuid() == 0, "the sandbox needs root (debootstrap, systemd-nspawn)")
    missing = [tool for tool in NEEDED_TOOLS if shutil.which(tool) is None]
    require(not missing, f"the sandbox needs {' '.join(missing)} (make debian-packages)")


@pytest.fixture(scope="session")
def sandbox_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A running sandbox on free ports in a private state directory (a demo is left alone)."""
    require_sandbox_prerequisites()
    world = Sandbox(tmp_path_factory.mktemp("sandbox"), Ports.free())
    # A SIGTERM to pytest (a CI timeout, `kill`) unwinds like Ctrl-C, so `down` still runs.
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        world.up()
        yield world
    finally:
        world.down()
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@dataclasses.dataclass
class PlaybookResult:
    returncode: int
    stdout: str
    stderr: str

    def recap(self) -> dict[str, dict[str, int]]:
        """PLAY RECAP counters per host: {"localhost": {"ok": 9, "changed": 0, ...}}."""
        return {
            host: {k: int(v) for k, v in (pair.split("=") for pair in counters.split())}
            for host, counters in RECAP.findall(self.stdout)
        }

    def changed(self, host: str | None = None) -> int:
        recap = self.recap()
        return sum(c["changed"] for h, c in recap.items() if host is None or h == host)


def run_playbook(
    world: Sandbox,
    playbook: str = "site.yml",
    *args: str,
    extra_vars: dict | None = None,
    timeout: float = 900,
) -> PlaybookResult:
    """ansible-playbook PLAYBOOK -i inventory/sandbox -e @STATE/vars.json [-e EXTRA] ARGS."""
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), playbook]
    argv += ["-i", "inventory/sandbox", "-e", f"@{world.vars_file}"]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    env = dict(os.environ, ANSIBLE_CONFIG=str(paths.REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
    result = subprocess.run(
        [*argv, *args],
        cwd=paths.REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return PlaybookResult(result.returncode, result.stdout, result.stderr)
