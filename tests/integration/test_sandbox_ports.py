"""What a user of `make demo` sees when the sandbox cannot start: a taken port (nothing is
started), a server that exits at once (its log named)."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.sandbox.world import Sandbox, SandboxError, wait_until


def test_a_taken_port_is_one_line_naming_the_variable_and_where_to_set_it(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "tests.sandbox", "--state-dir", str(tmp_path / "state")]
            + ["--moto-port", str(port), "up"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[-1] == (
        f"error: port {port} on 127.0.0.1 (sandbox_moto_port) is taken by another program, perhaps"
        " another checkout's make demo; set a free port as sandbox_moto_port in"
        " inventory/sandbox/group_vars/all/sandbox.yml (make demo reads it) or pass --moto-port"
        " to python -m tests.sandbox up"
    )
    assert "Traceback" not in proc.stderr


def test_a_server_that_exits_at_once_is_named_with_its_log_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    world = Sandbox(state_dir=tmp_path / ".sandbox", log=lambda message: None)
    state = {"processes": {}}
    command = [sys.executable, "-c", "import sys; sys.exit('files: address already in use')"]
    process = world._spawn(state, "files", command)
    with pytest.raises(SandboxError) as refused:
        wait_until(lambda: False, "files server", 20, process)
    assert str(refused.value) == (
        "files server: the process exited (see .sandbox/logs/files.log; make demo-down removes it)"
    )
    log = (tmp_path / ".sandbox" / "logs" / "files.log").read_text()
    assert log == "files: address already in use\n"
