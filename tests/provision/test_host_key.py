"""The deploy trusts pinned hosts only: before anything is sent, the instance's sshd must answer
with the host key pinned in twittersnake_known_hosts_file; a changed or unknown key stops the
run with one line. Against a real sshd on loopback with a host key of its own."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.collector_support import wait_until
from tests.conftest import REPO, free_port, require

# The deploy's pre-task as playbooks/deploy.yml has it, then a task of another tag.
PLAYBOOK = """
- name: The deploy's host key check
  hosts: collectors
  gather_facts: false
  pre_tasks:
{pre_task}
  tasks:
    - name: Sync the rules
      ansible.builtin.debug:
        msg: the token would be sent now
      tags: [rules]
"""


def deploy_pre_task() -> str:
    deploy = (REPO / "playbooks/deploy.yml").read_text()
    start = deploy.index("    - name: Check that the instance answers with its pinned SSH host key")
    return deploy[start : deploy.index("\n\n", start)]


def keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
    )
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[tuple[int, str, Path]]:
    """(port, its host key "type base64", folder): this machine's sshd with a key of its own."""
    require(shutil.which("sshd") is not None or Path("/usr/sbin/sshd").exists(), "needs sshd")
    require(os.geteuid() == 0, "sshd with its own config needs root")
    folder = tmp_path_factory.mktemp("sshd")
    key = keygen(folder / "host_key")
    port = free_port()
    config = folder / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\nPidFile none\n"
        "AuthenticationMethods publickey\nPasswordAuthentication no\nUsePAM no\n"
        "KbdInteractiveAuthentication no\nAllowUsers nobody-at-all\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    process = subprocess.Popen(
        [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        done = subprocess.run(
            ["ssh-keyscan", "-p", str(port), "127.0.0.1"], capture_output=True, text=True
        )
        return "ssh-ed25519" in done.stdout

    try:
        wait_until(answers, 20, 0.2)
        yield port, key, folder
    finally:
        process.terminate()
        process.wait(timeout=10)


def check(tmp_path: Path, port: int, known_hosts: Path, *args: str) -> subprocess.CompletedProcess:
    playbook = tmp_path / "check.yml"
    playbook.write_text(PLAYBOOK.format(pre_task=deploy_pre_task()))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        json.dumps(
            {
                "collectors": {
                    "hosts": {"instance": {"ansible_host": "127.0.0.1", "ansible_port": port}}
                }
            }
        )
    )
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook),
         "-i", str(inventory),
         "-e", json.dumps({"twittersnake_known_hosts_file": str(known_hosts)}), *args],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
             "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_FORCE_COLOR": "0",
             "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def failure_line(result: subprocess.CompletedProcess) -> str:
    """The failed task's message (Ansible's YAML result after `FAILED! =>`): one line."""
    failure = re.search(r"FAILED! =>(.*?)(?:\n\S|\Z)", result.stdout, re.S)
    assert failure, result.stdout[-3000:]
    message = yaml.safe_load(failure.group(1))["msg"]
    assert "\n" not in message
    return message


def test_the_pinned_host_key_passes(tmp_path, sshd):
    port, key, _ = sshd
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {key}\n")
    result = check(tmp_path, port, known)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("tags", [[], ["--tags", "rules"]], ids=["site", "rules-only"])
def test_a_changed_host_key_stops_the_deploy_in_one_line(tmp_path, sshd, tags):
    port, _, folder = sshd
    other = keygen(folder / f"other_key{len(tags)}")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {other}\n")
    result = check(tmp_path, port, known, *tags)
    assert "the token would be sent now" not in result.stdout
    assert result.returncode == 2, result.stdout[-3000:]
    assert (
        f"the SSH host key of [127.0.0.1]:{port} is not the pinned one in {known} (a changed key "
        "means another machine, or someone in between: nothing was sent;"
    ) in failure_line(result)


def test_an_unpinned_host_stops_the_deploy_in_one_line(tmp_path, sshd):
    port, _, _ = sshd
    known = tmp_path / "known_hosts"
    known.write_text("[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIElsewhere\n")
    result = check(tmp_path, port, known)
    assert result.returncode == 2, result.stdout[-3000:]
    assert f"no SSH host key of [127.0.0.1]:{port} is pinned in {known}" in failure_line(result)


@pytest.mark.slow  # two provision runs against moto
def test_provisioning_gives_a_new_instance_a_controller_made_host_key_and_pins_it(
    moto_server, tmp_path
):
    """On AWS the host key is known before the first connection: made on the controller, given
    to the instance through cloud-init user data, pinned in the known_hosts file the deploy
    trusts. A re-run changes nothing (the key and the pin are kept)."""
    from tests.provision.test_provision import Runner, recap

    moto_server.reset()
    runner = Runner(moto_server.url, tmp_path)
    known = tmp_path / "pins" / "known_hosts"
    pin = ["-e", "instance_pin_host_key=true", "-e", f"twittersnake_known_hosts_file={known}"]
    first = runner.run("provision", *pin)
    again = runner.run("provision", *pin)
    assert recap(again.stdout)["changed"] == 0, again.stdout[-3000:]

    key = known.parent / "twittersnake-collector_ssh_host_ed25519_key"
    assert key.stat().st_mode & 0o777 == 0o600
    public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    ec2 = runner.client("ec2")
    (instance,) = [
        i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]  # fmt: skip
    attribute = ec2.describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData"
    )
    user_data = base64.b64decode(attribute["UserData"]["Value"]).decode()
    assert user_data.startswith("#cloud-config\n") and public in user_data
    assert "ssh_deletekeys: true" in user_data and "ssh_genkeytypes: []" in user_data
    # The sandbox inventory connects to 127.0.0.1 on its ssh port: that address is pinned.
    (line,) = known.read_text().splitlines()
    assert line.startswith("[127.0.0.1]:") and line.endswith(public), line
    assert "PRIVATE KEY" not in first.stdout + again.stdout
