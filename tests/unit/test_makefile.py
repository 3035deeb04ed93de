"""What the Makefile promises a newcomer: a clear refusal where the sandbox cannot run."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import REPO, require


def test_demo_as_non_root_stops_with_one_clear_line_and_starts_nothing():
    require(shutil.which("setpriv") is not None, "setpriv (util-linux) is needed")
    # A copy readable by `nobody`, wherever the checkout lives.
    work = Path(tempfile.mkdtemp(prefix="twittersnake-make-"))
    try:
        work.chmod(0o755)
        for name in ("Makefile", "requirements.txt"):
            shutil.copy(REPO / name, work / name)
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "make", "-s", "demo"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "HOME": str(work)},
        )
        assert result.returncode != 0
        line = result.stderr.splitlines()[0]
        assert line.startswith("error: make demo needs root on Linux") and "sudo make demo" in line
        assert result.stdout == ""  # refused before anything ran
        assert sorted(p.name for p in work.iterdir()) == ["Makefile", "requirements.txt"]
    finally:
        shutil.rmtree(work)


def test_make_help_lists_every_target_once_with_one_line_each():
    phony = next(
        line for line in (REPO / "Makefile").read_text().splitlines() if line.startswith(".PHONY:")
    )
    targets = phony.split(":", 1)[1].split()
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    lines = result.stdout.splitlines()
    listed = [line.split()[0] for line in lines]
    assert sorted(listed) == sorted(targets)
    assert all(len(line.split(None, 1)) == 2 for line in lines), lines
