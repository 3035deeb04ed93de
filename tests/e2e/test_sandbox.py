"""The sandbox: it comes up on free ports, behaves like a cloud host, leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.sandbox.fixture import require_sandbox_prerequisites
from tests.sandbox.world import Ports, Sandbox, port_open, start_time

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture
def world(sandbox_world: Sandbox) -> Sandbox:
    """The session's sandbox (tests/sandbox/fixture.py), shared with the other e2e tests."""
    return sandbox_world


@pytest.fixture
def own_world(tmp_path_factory: pytest.TempPathFactory):
    """A sandbox of its own, for the test that stops it; on free ports."""
    require_sandbox_prerequisites()
    world = Sandbox(tmp_path_factory.mktemp("sandbox-under-test"), Ports.free())
    try:
        world.up()
        yield world
    finally:
        world.down()


def instance_python(world: Sandbox, code: str) -> str:
    return world.ssh(f"python3 -c {shlex.quote(code)}").stdout.strip()


def test_up_writes_the_variables_the_playbooks_need(world):
    variables = json.loads(world.vars_file.read_text())
    assert variables["sandbox_ssh_port"] == world.ports.ssh
    assert variables["sandbox_moto_port"] == world.ports.moto
    assert variables["sandbox_state_dir"] == str(world.state_dir)
    assert len(variables["sandbox_miniforge_sha256"]) == 64


def test_ssh_works_as_ubuntu_with_passwordless_sudo(world):
    assert world.ssh("id -un").stdout.strip() == "ubuntu"
    assert world.ssh("sudo -n id -u").stdout.strip() == "0"
    assert "Debian GNU/Linux 12" in world.ssh("cat /etc/os-release").stdout


def test_root_login_is_refused(world):
    command = world.ssh_command("true")
    command[-2] = command[-2].replace("ubuntu@", "root@")
    assert subprocess.run(command, capture_output=True, check=False).returncode != 0


def test_instance_boots_systemd_as_pid_1_in_its_own_pid_namespace(world):
    assert world.ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    # --wait: until the boot has finished; "degraded" would name a failed unit.
    state = world.ssh("systemctl is-system-running --wait", check=False).stdout.strip()
    assert state == "running", world.ssh("systemctl --failed --no-legend", check=False).stdout
    assert world.ssh("systemctl is-active ssh").stdout.strip() == "active"
    host_pids = {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
    instance_pids = {int(p) for p in world.ssh("ls /proc").stdout.split() if p.isdigit()}
    assert len(instance_pids) < 20 < len(host_pids)


def test_instance_reaches_moto_and_the_x_stand_in_on_loopback(world):
    fetch = "import urllib.request as u, sys; print(u.urlopen(sys.argv[1], timeout=5).status)"
    for url in (
        f"http://127.0.0.1:{world.ports.moto}/moto-api/",
        f"http://127.0.0.1:{world.ports.x}/_fake/stats",
    ):
        assert world.ssh(f"python3 -c {shlex.quote(fetch)} {url}").stdout.strip() == "200"


def test_instance_clones_the_repository_from_git_daemon(world):
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    remote = world.ssh(f"git ls-remote git://127.0.0.1:{world.ports.git}/twittersnake.git HEAD")
    assert remote.stdout.split()[0] == head


def test_miniforge_stand_in_installs_conda_that_builds_an_environment(world):
    url = f"http://127.0.0.1:{world.ports.files}/Miniforge3.sh"
    sha256 = json.loads(world.vars_file.read_text())["sandbox_miniforge_sha256"]
    script = f"""set -e
        cd /tmp && python3 -c 'import urllib.request as u; u.urlretrieve("{url}", "m.sh")'
        echo "{sha256}  m.sh" | sha256sum -c --quiet
        sudo bash m.sh -b -p /opt/conda-test >/dev/null
        ! sudo bash m.sh -b -p /opt/conda-test 2>/dev/null
        printf 'name: t\\ndependencies:\\n  - python=3.11\\n  - pip\\n' > env.yml
        printf '  - pip:\\n      - tqdm==4.70.1\\n' >> env.yml
        sudo /opt/conda-test/bin/conda env create -q -n t -f env.yml
        /opt/conda-test/envs/t/bin/python -c 'import tqdm; assert tqdm.__version__ == "4.70.1"'
        sudo /opt/conda-test/bin/conda env list --json"""
    try:
        result = world.ssh(script, timeout=300)
        history = world.ssh("cat /opt/conda-test/envs/t/conda-meta/history").stdout
    finally:  # the sandbox is shared: leave it as it was
        world.ssh("sudo rm -rf /opt/conda-test /tmp/m.sh /tmp/env.yml", check=False)
    assert "/opt/conda-test/envs/t" in json.loads(result.stdout)["envs"]
    # Like conda, it records the command line; pip's index is the sandbox's (/etc/pip.conf).
    assert "# cmd: /opt/conda-test/bin/conda env create -q -n t -f env.yml" in history
    assert f"127.0.0.1:{world.ports.files}/simple/" in world.ssh("cat /etc/pip.conf").stdout


def test_the_package_index_is_the_wheelhouse_and_nothing_else(world):
    """pip on the instance reads the sandbox's index only: what is not in the wheelhouse fails."""
    script = """set -e
        python3 -m venv /tmp/v
        /tmp/v/bin/python -m pip install -q --disable-pip-version-check tqdm==4.70.1
        ! /tmp/v/bin/python -m pip install -q --disable-pip-version-check flask 2>/dev/null"""
    try:
        world.ssh(script, timeout=300)
    finally:
        world.ssh("rm -rf /tmp/v", check=False)


def test_reboot_boots_the_instance_again_and_returns_when_ssh_answers(world):
    booted, boots = world.ssh("ps -o lstart= -p 1").stdout.strip(), world.boots()
    world.ssh("sudo touch /var/tmp/survives-reboot /run/gone-after-reboot")
    world.reboot()
    assert world.boots() == boots + 1
    assert world.ssh("ps -o lstart= -p 1").stdout.strip() != booted  # a new PID 1
    assert world.ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    assert world.ssh("test -e /var/tmp/survives-reboot && ! test -e /run/gone-after-reboot")
    world.ssh("sudo rm /var/tmp/survives-reboot")


def test_ssh_command_line_runs_a_command_on_the_instance(world):
    result = subprocess.run(
        [sys.executable, "-m", "tests.sandbox", "--state-dir", str(world.state_dir), "ssh"]
        + ["systemctl is-system-running"],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert (result.returncode, result.stdout.strip()) == (0, "running"), result.stderr


def test_up_again_reuses_the_running_sandbox(world):
    before = world.status()["processes"]
    world.up()
    assert world.status()["processes"] == before


def test_down_leaves_no_process_and_no_mount(own_world):
    world = own_world
    state = json.loads(world.state_file.read_text())
    pids = [p["pid"] for p in state["processes"].values()]
    root = str(world.root)
    cgroups = [Path(d) for d in state["cgroups"]]
    assert cgroups and all((d / "cgroup.procs").read_text().strip() for d in cgroups)
    world.down()
    assert all(start_time(pid) is None for pid in pids)
    assert not any(d.exists() for d in cgroups)  # every process of the instance is gone
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                assert not os.readlink(proc / "root").startswith(root)
    assert root not in Path("/proc/self/mountinfo").read_text()
    assert not world.state_dir.exists()
    for port in (world.ports.moto, world.ports.x, world.ports.git, world.ports.files):
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    assert not port_open(world.ports.git_ssh) and not port_open(world.ports.ssh)
