"""The compliance role's systemd units: rendered by the role, checked by systemd, and the
command the daily service runs, run as written against the stand-in and moto.

The role's install step (tags compliance_preflight, compliance_install) writes the units into
a temporary compliance_unit_dir on the controller; enabling them (compliance_run) needs a
booted systemd and is proved in the sandbox (tests/e2e).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collector.analysis import compliance
from collector.config import load_config
from tests.collector_support import CollectorProcess, run_cli, wait_until
from tests.conftest import REPO
from tests.integration.test_compliance import POSTS, archive, mark  # noqa: F401 (fixture)

PLAY = """
- name: The compliance role's units
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: compliance
"""


def play(tmp_path: Path, *extra: str, config: Path | None = None) -> subprocess.CompletedProcess:
    playbook = tmp_path / "compliance.yml"
    playbook.write_text(PLAY)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    credentials = tmp_path / "aws_credentials"
    credentials.write_text(
        "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n"
    )
    variables = {
        "compliance_unit_dir": str(tmp_path / "units"),
        "compliance_python": sys.executable,
        "compliance_directory": str(REPO),
        "compliance_config_file": str(config or tmp_path / "collector.toml"),
        "compliance_environment": {
            "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
            "AWS_CONFIG_FILE": "/dev/null",
        },
    }
    (tmp_path / "units").mkdir(exist_ok=True)
    command = [str(REPO / ".venv/bin/ansible-playbook"), str(playbook), "-i", "localhost,"]
    command += ["--tags", "compliance_preflight,compliance_install", "-e", json.dumps(variables)]
    command += ["-e", "ansible_python_interpreter={{ ansible_playbook_python }}", *extra]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def changed(proc: subprocess.CompletedProcess) -> int:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    match = re.search(r"localhost\s*:.*changed=(\d+)", proc.stdout.split("PLAY RECAP")[-1])
    return int(match[1])


def unit(path: Path) -> dict[str, list[str]]:
    """key -> values of a unit file (a key may repeat, as Environment does)."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def test_the_role_writes_a_daily_and_a_monthly_timer_systemd_accepts(tmp_path: Path) -> None:
    assert changed(play(tmp_path)) == 3  # the services, the timers, the schedule
    assert changed(play(tmp_path)) == 0
    schedule = json.loads((tmp_path / "compliance-schedule.json").read_text())
    assert int(schedule["overdue_hours"]) == 36 and schedule["daily_since"] == "30d"
    units = tmp_path / "units"
    names = sorted(p.name for p in units.iterdir())
    assert names == [
        "twittersnake-compliance-archive.service",
        "twittersnake-compliance-archive.timer",
        "twittersnake-compliance.service",
        "twittersnake-compliance.timer",
    ]
    daily, archive_run = unit(units / names[2]), unit(units / names[0])
    assert daily["User"] == ["twittersnake"] and daily["Type"] == ["oneshot"]
    assert daily["ExecStart"][0].endswith(
        f"-m collector compliance --config {tmp_path / 'collector.toml'} --since 30d "
        "--cache-dir /var/cache/twittersnake --no-progress"
    )
    assert " --all " in archive_run["ExecStart"][0]
    # the runs share the spool's compliance state: one lock for both
    assert daily["ExecStart"][0].split()[:2] == archive_run["ExecStart"][0].split()[:2]
    assert unit(units / names[3])["OnCalendar"] == ["*-*-* 03:30:00"]
    assert unit(units / names[1])["OnCalendar"] == ["*-*-01 04:30:00"]
    assert unit(units / names[3])["Persistent"] == ["true"]
    assert unit(units / names[3])["WantedBy"] == ["timers.target"]
    assert any(v.startswith('"AWS_SHARED_CREDENTIALS_FILE=') for v in daily["Environment"])
    assert all(mode == 0o644 for mode in ((units / n).stat().st_mode & 0o777 for n in names))

    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is needed (Debian: the systemd package)")
    verify = subprocess.run(
        ["systemd-analyze", "verify", *(str(units / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # A user that exists only on the instance is not systemd's concern at verify time.
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_compliance_enabled_false_writes_no_unit_and_a_bad_period_is_named(tmp_path: Path) -> None:
    assert changed(play(tmp_path, "-e", "compliance_enabled=false")) == 0
    assert list((tmp_path / "units").iterdir()) == []
    assert not (tmp_path / "compliance-schedule.json").exists()  # status: nothing promised
    assert changed(play(tmp_path, "-e", "compliance_archive_on_calendar=")) == 3
    assert sorted(p.name for p in (tmp_path / "units").iterdir()) == [
        "twittersnake-compliance.service",
        "twittersnake-compliance.timer",
    ]
    refused = play(tmp_path, "-e", "compliance_daily_since=30days")
    assert refused.returncode != 0
    assert "compliance_daily_since must be a number and s, m, h or d (e.g. 30d), got '30days'" in (
        refused.stdout
    )


def test_the_daily_service_command_records_a_run_collector_status_shows(
    tmp_path: Path,
    archive,  # noqa: F811 (the fixture imported above)
) -> None:
    """The ExecStart line as the role writes it, with the unit's environment, against the
    stand-in and moto: the run that systemd starts every day."""
    marked = mark(archive)
    assert changed(play(tmp_path, config=archive.config)) == 3
    service = unit(tmp_path / "units" / "twittersnake-compliance.service")
    command = shlex.split(service["ExecStart"][0])
    cache = Path(command[command.index("--cache-dir") + 1])
    command[command.index("--cache-dir") + 1] = str(tmp_path / "cache")  # not /var/cache here
    command[command.index("/usr/bin/flock") + 1] = str(tmp_path / "compliance.lock")
    assert cache == Path("/var/cache/twittersnake")
    env = {"PATH": os.environ["PATH"]}
    env.update(value.strip('"').split("=", 1) for value in service["Environment"])
    collector = CollectorProcess(archive.config)
    try:
        wait_until(lambda: run_cli("status", "--config", str(archive.config)).returncode == 0)
        run = subprocess.run(
            command, cwd=service["WorkingDirectory"][0], env=env, capture_output=True,
            text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"{POSTS} post ids from" in run.stdout
        status = run_cli("status", "--config", str(archive.config))
    finally:
        assert collector.stop() == 0, collector.log
    last = compliance.read_last_run(load_config(archive.config).spool.dir)
    assert last["ok"] and last["ids_checked"] == POSTS
    assert status.returncode == 0, status.stdout
    shown = next(
        line for line in status.stdout.splitlines() if line.split()[:1] == ["compliance_last_run"]
    )
    removed = sum(reason != "scrub_geo" for reason in marked.values())
    assert f"{POSTS} ids checked, {removed} removed, 2 geotags scrubbed" in shown
