"""The sandbox refusing a taken port: what a user of `make demo` sees (nothing is started)."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.conftest import REPO


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
