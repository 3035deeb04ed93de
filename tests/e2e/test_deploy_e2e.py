"""End to end: the sandbox, site.yml, and the collector running under supervisor on the instance.

One sandbox and one initial deploy are shared by the whole module (they take minutes); the tests
run in file order, each leaving the collector running for the next, and each re-run passes the
accumulated extra vars so that only the change under test differs from the previous run.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from pathlib import Path

import boto3
import botocore.exceptions
import jinja2
import pytest
import yaml
import zstandard

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
TOKEN_FILE = "/etc/twittersnake/secrets/x_bearer_token"
SPOOL = "/var/lib/twittersnake/spool"
LOG = "/var/log/twittersnake/collector.log"
SRC = "/opt/twittersnake/src"


class Sandbox:
    """The running sandbox: ssh into the instance, run site.yml, read the bucket."""

    def __init__(self, world) -> None:
        self.world = world
        self.vars_file = world.vars_file
        self.vars = json.loads(self.vars_file.read_text())
        # The sandbox image, like a cloud image, lets in `ubuntu` (passwordless sudo), not root.
        self.extra: dict = {"instance_connect_user": "ubuntu"}
        self.outputs: list[str] = []

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> str:
        """Run a shell command as root on the instance (ssh as ubuntu, then sudo)."""
        result = self.world.ssh(
            f"sudo -n sh -c {shlex.quote(command)}", check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{command!r} failed ({result.returncode}): {result.stdout}{result.stderr}"
            )
        return result.stdout

    def site(self, *args: str, **extra) -> subprocess.CompletedProcess:
        self.extra.update(extra)
        argv = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "site.yml",
            "-i",
            "inventory/sandbox",
            "-e",
            f"@{self.vars_file}",
            "-e",
            json.dumps(self.extra),
            *args,
        ]
        env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0")
        result = subprocess.run(
            argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        self.outputs.append(result.stdout + result.stderr)
        return result

    def pid(self) -> int:
        out = self.ssh("supervisorctl pid twittersnake", check=False).strip()
        return int(out) if out.isdigit() else 0

    def process_identity(self, pid: int) -> tuple[int, str]:
        """(pid, start time in clock ticks since the kernel booted): unique across reboots."""
        return pid, self.ssh(f"cut -d' ' -f22 /proc/{pid}/stat").strip()

    def state(self) -> str:
        out = self.ssh("supervisorctl status twittersnake", check=False).split()
        return out[1] if len(out) > 1 else ""

    def wait_running(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state() == "RUNNING" and self.pid():
                return self.pid()
            time.sleep(1)
        raise AssertionError(
            f"collector not RUNNING: {self.ssh('supervisorctl status', check=False)}"
        )

    def spool_files(self) -> list[str]:
        return self.ssh(
            f"find {SPOOL} -type f -path '*/open/*'"
            " -o -type f -path '*/sealed/*' -o -type f -path '*/ready/*'"
        ).split()

    def s3(self):
        return boto3.client(
            "s3",
            endpoint_url=self.vars.get("aws_endpoint_url")
            or f"http://127.0.0.1:{self.vars['sandbox_moto_port']}",
            region_name="us-east-1",
            # the sandbox's moto enforces IAM: read as its administrator
            aws_access_key_id=self.vars["aws_access_key"],
            aws_secret_access_key=self.vars["aws_secret_key"],
        )

    def bucket_post_ids(self, streamed_only: bool = False) -> list[str]:
        """The post ids of every data object, one per line; with streamed_only, not those of
        gap repair's objects (`-repair-` in the name: they overlap the stream by
        x.repair_margin_seconds on both sides of a gap, by design)."""
        s3 = self.s3()
        bucket = self.vars.get("twittersnake_bucket", "twittersnake-sandbox")
        ids = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                if "/_events/" in f"/{obj['Key']}" or "/_compliance/" in f"/{obj['Key']}":
                    continue  # connection events and compliance results, not posts
                if streamed_only and "-repair-" in obj["Key"].rsplit("/", 1)[-1]:
                    continue
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                if obj["Key"].endswith(".gz"):
                    body = gzip.decompress(body)
                elif obj["Key"].endswith(".zst"):
                    body = zstandard.ZstdDecompressor().decompressobj().decompress(body)
                ids += [
                    json.loads(line)["data"]["id"] for line in body.splitlines() if line.strip()
                ]
        return ids

    def wait_for_posts(self, more_than: int, timeout: float = 90) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.bucket_post_ids()
            if len(ids) > more_than:
                return ids
            time.sleep(2)
        raise AssertionError(f"no more than {more_than} posts reached the bucket in {timeout}s")

    def sent_ids(self) -> set[str]:
        """Ids of every post the X stand-in has fully written to a stream connection."""
        url = f"http://127.0.0.1:{self.vars['sandbox_x_port']}/_fake/sent_ids"
        with urllib.request.urlopen(url, timeout=10) as response:
            return set(json.load(response))

    def ledger_ids(self) -> list[str]:
        """The post ids the collector's billing ledger on the instance holds, day after day
        (<spool>/ledger/YYYY-MM-DD.u64: little-endian uint64 ids, each once per UTC day)."""
        folder = "/var/lib/twittersnake/spool/ledger"
        data = base64.b64decode(self.ssh(f"cat {folder}/*.u64 | base64 -w0"))
        return [str(i) for i in array("Q", data[: len(data) // 8 * 8])]

    def billed_posts(self) -> int:
        """Posts the X stand-in billed, over every UTC day (its bill: unique ids per day,
        stream and search alike)."""
        url = f"http://127.0.0.1:{self.vars['sandbox_x_port']}/_fake/stats"
        with urllib.request.urlopen(url, timeout=10) as response:
            return sum(json.load(response)["billed"].values())

    def sent_while_connected(self, seconds: float = 4) -> set[str]:
        """Posts the stand-in sent during the next `seconds`, to the collector already connected.

        Posts written to the socket of an earlier collector process are left out: the stand-in
        counts a post once its write returns, so one in flight when a process stopped reading
        (SIGTERM of an earlier restart) or died counts as sent although nobody received it.
        """
        time.sleep(2)  # connected well before the window opens
        before = self.sent_ids()
        time.sleep(seconds)  # posts in the open spool file, not yet sealed (rotation every 5 s)
        return self.sent_ids() - before

    def missing_from_bucket(self, wanted: set[str], timeout: float = 90) -> set[str]:
        """Waits until every wanted id is in the bucket; returns those still missing."""
        deadline = time.monotonic() + timeout
        while True:
            ids = self.bucket_post_ids()
            streamed = self.bucket_post_ids(streamed_only=True)
            assert len(streamed) == len(set(streamed)), "a streamed post reached the bucket twice"
            missing = wanted - set(ids)
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(2)


def recap_changed(output: str) -> int:
    """changed= of the instance's PLAY RECAP line (localhost is the provisioning side)."""
    counts = [
        int(m.group(2))
        for m in re.finditer(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", output, re.M)
        if m.group(1) != "localhost"
    ]
    assert counts, output[-3000:]
    return sum(counts)


@pytest.fixture(scope="module")
def sandbox(sandbox_world):
    """The session's sandbox (tests/sandbox/fixture.py) after one initial site.yml."""
    box = Sandbox(sandbox_world)
    first = box.site()
    assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-3000:]
    return box


def test_site_yml_delivers_posts_to_the_bucket(sandbox):
    sandbox.wait_running()
    ids = sandbox.wait_for_posts(more_than=0)
    assert all(i.isdigit() for i in ids)


def test_moto_enforces_iam_and_the_collectors_key_has_only_its_grant(sandbox):
    """The sandbox's moto refuses unknown keys; the key the collector on the instance signs with
    (written by roles/iam) reads what it shipped but may not delete it or call IAM."""
    ids = sandbox.wait_for_posts(more_than=0)
    assert ids
    endpoint = f"http://127.0.0.1:{sandbox.vars['sandbox_moto_port']}"
    stored = yaml.safe_load(Path(sandbox.vars["twittersnake_credentials_file"]).read_text())

    def client(service: str, key_id: str, secret: str):
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
        )

    with pytest.raises(botocore.exceptions.ClientError, match="InvalidAccessKeyId"):
        client("s3", "testing", "testing").list_buckets()
    key_id = stored["collector_aws_access_key_id"]
    secret = stored["collector_aws_secret_access_key"]
    collector_s3 = client("s3", key_id, secret)
    bucket = sandbox.vars.get("twittersnake_bucket", "twittersnake-sandbox")
    shipped = sandbox.s3().list_objects_v2(Bucket=bucket, Prefix="raw/")["Contents"][0]["Key"]
    assert collector_s3.head_object(Bucket=bucket, Key=shipped)["ContentLength"] > 0
    answer = collector_s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": shipped}]})
    assert [e["Code"] for e in answer["Errors"]] == ["AccessDenied"]
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        collector_s3.delete_object(Bucket=bucket, Key=shipped)
    with pytest.raises(botocore.exceptions.ClientError, match="AccessDenied"):
        client("iam", key_id, secret).list_users()


def test_systemd_is_pid_1_and_starts_supervisord_enabled_at_boot(sandbox):
    pid = sandbox.wait_running()
    assert sandbox.ssh("cat /proc/1/comm").strip() == "systemd"
    assert sandbox.ssh("systemctl is-enabled supervisor").strip() == "enabled"
    assert sandbox.ssh("systemctl is-active supervisor").strip() == "active"
    # The collector's parent is supervisord, and that supervisord is the unit's main process.
    parent = int(sandbox.ssh(f"ps -o ppid= -p {pid}"))
    assert "supervisord" in sandbox.ssh(f"ps -o args= -p {parent}")
    assert sandbox.ssh("systemctl show --property=MainPID --value supervisor").strip() == str(
        parent
    )


def test_the_compliance_timers_are_enabled_and_a_run_shows_in_collector_status(sandbox):
    """The compliance role's timers, enabled by systemd on the instance; the daily service,
    started as its timer starts it, runs as the collector's user against the stand-in's
    batch compliance jobs and moto, and `collector status` shows its run."""
    sandbox.wait_running()
    for timer in ("twittersnake-compliance.timer", "twittersnake-compliance-archive.timer"):
        assert sandbox.ssh(f"systemctl is-enabled {timer}").strip() == "enabled"
        assert sandbox.ssh(f"systemctl is-active {timer}").strip() == "active"
    timers = sandbox.ssh("systemctl list-timers --all --no-pager 'twittersnake-compliance*'")
    assert "twittersnake-compliance.service" in timers, timers
    sandbox.wait_for_posts(0)

    # a oneshot service: start returns when the run has ended
    started = sandbox.world.ssh(
        "sudo -n systemctl start twittersnake-compliance.service", check=False, timeout=600
    )
    journal = sandbox.ssh("journalctl -u twittersnake-compliance.service --no-pager -n 20")
    assert started.returncode == 0, started.stderr + journal
    assert "post ids from" in journal and "no post reads billed" in journal, journal
    owner = sandbox.ssh(f"stat -c %U {SPOOL}/compliance/last_run.json").strip()
    assert owner == "twittersnake"
    status = sandbox.ssh(
        "cd /opt/twittersnake/src && sudo -u twittersnake /opt/conda/envs/twittersnake/bin/python"
        " -m collector status --config /etc/twittersnake/collector.toml",
        check=False,
    )
    line = next(line for line in status.splitlines() if "compliance_last_run " in line)
    assert re.search(r"ok at \S+: \d+ ids checked, 0 removed, 0 geotags scrubbed", line), status
    assert "compliance_last_run_ok" in status and "compliance_age_seconds" in status


def locked_versions(lock: str) -> dict[str, str]:
    """{project: version} of a hash-locked requirements file (`make lock`)."""
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", lock, re.M)
    }


def test_environment_is_built_by_the_conda_roles_command_at_the_locked_versions(sandbox):
    role = yaml.safe_load((REPO / "roles/conda/tasks/environment.yml").read_text())
    (create,) = [task for task in role if task["name"] == "Create the environment"]
    defaults = yaml.safe_load((REPO / "roles/conda/defaults/main.yml").read_text())
    argv = [
        jinja2.Template(arg).render(defaults) for arg in create["ansible.builtin.command"]["argv"]
    ]
    history = sandbox.ssh("cat /opt/conda/envs/twittersnake/conda-meta/history")
    commands = re.findall(r"^# cmd: (.*)$", history, re.M)
    assert commands and commands[0] == " ".join(argv), history  # conda records each command line
    assert "# pip: " not in history  # conda gives python and pip only; pip installs the lock
    listing = sandbox.ssh("/opt/conda/envs/twittersnake/bin/python -m pip list --format json")
    installed = {
        re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"] for p in json.loads(listing)
    }
    # Every package of the lock, transitive ones too, at its locked version (test_conda_environment:
    # the versions requirements.txt pins), and nothing else but the environment's own pip.
    locked = locked_versions((REPO / "collector/requirements.lock").read_text())
    assert {name: installed.get(name) for name in locked} == locked
    assert set(installed) - set(locked) <= {"pip", "setuptools", "wheel"}, installed
    applied = sandbox.ssh("cat /opt/conda/envs/.twittersnake.requirements.lock")
    assert applied == (REPO / "collector/requirements.lock").read_text()


def test_a_file_whose_sha256_the_lock_does_not_list_stops_the_deploy(sandbox):
    """What a tampered mirror or PyPI answer looks like to the instance: pip refuses the file, the
    deploy stops at the conda role with pip's line, and the running collector is left alone.
    A fresh environment (another conda_env_name), as on a new instance: pip does not download
    again what is already installed at the locked version."""
    pid = sandbox.pid()
    lock = (REPO / "collector/requirements.lock").read_text()
    forged = hashlib.sha256(b"not the file PyPI serves").hexdigest()
    entry = re.compile(r"^six==(\S+)(?: \\\n\s+--hash=sha256:[0-9a-f]{64})+", re.M)
    version = entry.search(lock).group(1)
    tampered = entry.sub(f"six=={version} \\\n    --hash=sha256:{forged}", lock)
    assert tampered != lock and forged in tampered
    encoded = base64.b64encode(tampered.encode()).decode()
    sandbox.ssh(f"echo {encoded} | base64 -d > /root/tampered.requirements.lock")
    try:
        result = sandbox.site(
            conda_env_name="twittersnake-tampered",
            conda_env_requirements="/root/tampered.requirements.lock",
        )
        output = result.stdout + result.stderr
        assert result.returncode != 0, output[-3000:]
        assert "THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE" in output
        assert f"six=={version} from" in output and f"Expected sha256 {forged}" in output
        task = "TASK [conda : Install the hash-locked packages into the environment]"
        assert "fatal: [" in output.split(task, 1)[-1].split("TASK [", 1)[0], output[-3000:]
        # Nothing recorded as installed: the next run installs the lock again.
        stamp = "/opt/conda/envs/.twittersnake-tampered.requirements.lock"
        assert sandbox.ssh(f"test -e {stamp} || echo absent").strip() == "absent"
        assert sandbox.pid() == pid  # the deploy stopped before the collector's program
    finally:
        for key in ("conda_env_name", "conda_env_requirements"):
            sandbox.extra.pop(key, None)
        sandbox.ssh(
            "rm -rf /opt/conda/envs/twittersnake-tampered /opt/conda/envs/.twittersnake-tampered.*"
            " /root/tampered.requirements.lock"
        )


def test_private_repository_is_cloned_with_the_deploy_key_and_the_pinned_host_key(sandbox):
    url = sandbox.vars["twittersnake_repo_url"]
    host_key = sandbox.vars["twittersnake_repo_host_key"]
    assert url.startswith("ssh://")
    assert sandbox.ssh("git -C /opt/twittersnake/src remote get-url origin").strip() == url
    key = "/etc/twittersnake/deploy/repo_deploy_key"
    assert sandbox.ssh(f"stat -c '%a %U' {key}").split() == ["600", "root"]
    # Root only: the service user (and a notebook running as it) cannot read it.
    assert sandbox.ssh(f"stat -c '%a %U' {Path(key).parent}").split() == ["700", "root"]
    unreadable = sandbox.ssh(f"sudo -u twittersnake cat {key} 2>&1", check=False)
    assert "Permission denied" in unreadable, unreadable
    assert sandbox.ssh("cat /etc/twittersnake/repo_known_hosts").strip() == host_key
    # The server lets nobody in without the deploy key (ubuntu has no key of its own)...
    ssh = "ssh -o BatchMode=yes -o IdentitiesOnly=yes"
    anonymous = sandbox.world.ssh(
        f"GIT_SSH_COMMAND='{ssh} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'"
        f" git ls-remote {url}",
        check=False,
    )
    assert anonymous.returncode != 0 and "Permission denied" in anonymous.stderr, anonymous
    # ...and the deploy key is used only against the pinned host key, never a blind accept.
    pinned = f"{ssh} -i {key} -o StrictHostKeyChecking=yes"
    head = sandbox.ssh(
        f"GIT_SSH_COMMAND='{pinned} -o UserKnownHostsFile=/etc/twittersnake/repo_known_hosts'"
        f" git ls-remote {url} HEAD"
    )
    assert re.match(r"^[0-9a-f]{40}\s", head), head
    unknown = sandbox.ssh(
        f"GIT_SSH_COMMAND='{pinned} -o UserKnownHostsFile=/dev/null' git ls-remote {url} 2>&1",
        check=False,
    )
    assert "Host key verification failed" in unknown, unknown
    body = "".join(sandbox.vars["twittersnake_repo_deploy_key"].splitlines()[1:-1])
    assert all(body[:40] not in output for output in sandbox.outputs)  # never in Ansible's output


def test_a_changed_host_key_stops_the_deploy_before_anything_is_sent(sandbox, tmp_path):
    """Someone else answering on the instance's address (here: the pinned keys replaced by
    another): the deploy stops with one line before any secret leaves the controller."""
    known = sandbox.world.known_hosts
    pinned = known.read_text()
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    address = pinned.split()[0]
    known.write_text(f"{address} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    token_before = sandbox.ssh(f"stat -c %Y {TOKEN_FILE}").strip()
    try:
        result = sandbox.site()
    finally:
        known.write_text(pinned)
    assert result.returncode != 0
    output = " ".join(result.stdout.split())  # Ansible folds the message over lines
    assert f"the SSH host key of {address} is not the pinned one in " in output, output[-3000:]
    assert "a changed key means another machine, or someone in between: nothing was sent" in output
    assert "Sync the live rules" not in result.stdout
    assert sandbox.ssh(f"stat -c %Y {TOKEN_FILE}").strip() == token_before


def test_a_deploy_key_without_a_pinned_host_key_is_refused(sandbox):
    result = sandbox.site(twittersnake_repo_host_key="")
    sandbox.extra.pop("twittersnake_repo_host_key")
    assert result.returncode != 0
    assert "twittersnake_repo_deploy_key needs twittersnake_repo_host_key" in result.stdout
    assert "TASK [collector : Clone the collector" not in result.stdout  # stopped before it


def test_rerun_without_changes_changes_nothing_and_keeps_pid(sandbox):
    pid = sandbox.wait_running()
    result = sandbox.site()
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap_changed(result.stdout) == 0, result.stdout[-5000:]
    assert sandbox.pid() == pid


def test_check_diff_shows_changes_and_restarts_nothing(sandbox):
    pid = sandbox.wait_running()
    rules = [{"value": "python lang:en", "tag": "python"}, {"value": "ansible", "tag": "ops"}]
    result = sandbox.site(
        "--check", "--diff", collector_x_rules=rules, collector_rotate_max_records=15000
    )
    for key in ("collector_x_rules", "collector_rotate_max_records"):  # check mode applied nothing
        sandbox.extra.pop(key)
    assert result.returncode == 0, result.stdout[-3000:]
    assert recap_changed(result.stdout) > 0
    assert 'value = "ansible"' in result.stdout and "15000" in result.stdout  # collector.toml diff
    assert sandbox.pid() == pid
    assert "15000" not in sandbox.ssh("cat /etc/twittersnake/collector.toml")


def test_rules_only_change_syncs_live_rules_without_restart(sandbox):
    pid = sandbox.wait_running()
    rules = [{"value": "python lang:en", "tag": "python"}, {"value": "ansible", "tag": "ops"}]
    result = sandbox.site(collector_x_rules=rules)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Sync the live rules without restarting" in result.stdout
    assert sandbox.pid() == pid
    live = sandbox.ssh(
        "cd /opt/twittersnake/src && /opt/conda/envs/twittersnake/bin/python"
        " -m collector rules list --config /etc/twittersnake/collector.toml"
    )
    assert "ansible" in live


def test_a_rule_x_refuses_fails_every_deploy_with_xs_reason_and_changes_nothing(sandbox):
    pid = sandbox.wait_running()
    good = sandbox.extra.get("collector_x_rules")  # the previous test's, live
    live = good or [{"value": "python lang:en", "tag": "python"}]
    typo = [*live, {"value": "(python OR rust", "tag": "langs"}]
    reason = (
        "X refused x.rules '(python OR rust' (tag sandbox-collector:langs): UnprocessableEntity: "
        "Missing closing parenthesis for this one (at position 1)"
    )
    try:
        for _ in range(2):  # the second run of the same inventory fails as the first did
            result = sandbox.site(collector_x_rules=typo)
            assert result.returncode != 0, result.stdout[-3000:]
            assert reason in result.stdout, result.stdout[-3000:]
            assert "TASK [collector : Create the" not in result.stdout  # before anything runs
    finally:
        sandbox.extra.pop("collector_x_rules")
        if good is not None:
            sandbox.extra["collector_x_rules"] = good
    assert sandbox.pid() == pid
    assert "(python OR rust" not in sandbox.ssh("cat /etc/twittersnake/collector.toml")


def test_tags_rules_changes_the_live_rules_and_nothing_else(sandbox):
    pid = sandbox.wait_running()
    before = sandbox.extra.get("collector_x_rules")
    rules = [{"value": "python lang:en", "tag": "python"}, {"value": "golang", "tag": "go"}]
    result = sandbox.site("--tags", "rules", collector_x_rules=rules)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Sync the live rules without restarting" in result.stdout
    deploy = result.stdout.split("PLAY [Deploy the collector]", 1)[1]
    tasks = re.findall(r"^TASK \[([^\]]+)\]", deploy, re.M)
    # nothing of the environment, supervisor or the notebook (their argument checks run always)
    others = [
        t
        for t in tasks
        if t.split(" : ")[0] in ("conda", "supervisor", "notebook") and "Validating" not in t
    ]
    assert "collector : Write collector.toml" in tasks and not others, tasks
    assert recap_changed(result.stdout) == 2  # collector.toml and the sync
    assert sandbox.pid() == pid
    live = sandbox.ssh(
        "cd /opt/twittersnake/src && /opt/conda/envs/twittersnake/bin/python"
        " -m collector rules list --config /etc/twittersnake/collector.toml"
    )
    assert "golang" in live
    again = sandbox.site("--tags", "rules")
    assert again.returncode == 0 and recap_changed(again.stdout) == 0, again.stdout[-3000:]
    if before is not None:  # the next tests start from the rules they expect
        sandbox.site("--tags", "rules", collector_x_rules=before)


def _on_instance(sandbox, command: str) -> subprocess.CompletedProcess:
    """`command` as root (sudo, root's own environment) in the collector's checkout."""
    return sandbox.world.ssh(
        "sudo -n sh -c "
        + shlex.quote(f"cd /opt/twittersnake/src && /opt/conda/envs/twittersnake/bin/{command}"),
        check=False,
    )


def test_check_with_sudo_on_the_instance_uses_the_collectors_key(sandbox):
    result = _on_instance(
        sandbox, "python -m collector check --config /etc/twittersnake/collector.toml"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(
        r"^ok    S3 bucket: s3://\S+ reachable with the key in "
        r"/etc/twittersnake/secrets/aws_credentials$",
        result.stdout,
        re.M,
    ), result.stdout


def test_report_on_the_instance_says_in_one_line_where_to_run_it(sandbox):
    for command in ("report", "export"):
        result = _on_instance(
            sandbox,
            f"python -m collector {command} --config /etc/twittersnake/collector.toml --since 1h",
        )
        assert result.returncode == 69, result.stdout + result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"collector: error: collector {command} needs DuckDB"), line
        assert f".venv/bin/python -m collector {command} --config" in line


def test_a_manual_run_beside_supervisors_exits_78_naming_its_pid_and_touches_nothing(sandbox):
    pid = sandbox.wait_running()
    result = _on_instance(
        sandbox, "python -m collector run --config /etc/twittersnake/collector.toml"
    )
    assert result.returncode == 78, result.stdout + result.stderr
    refusal = [line for line in (result.stdout + result.stderr).splitlines() if "in use" in line]
    assert len(refusal) == 1 and f"pid {pid}" in refusal[0], result.stdout + result.stderr
    assert sandbox.state() == "RUNNING" and sandbox.pid() == pid


def _stops_logged(sandbox) -> int:
    return sandbox.ssh("cat /var/log/supervisor/supervisord.log*", check=False).count(
        "stopped: twittersnake"
    )


def test_other_config_change_restarts_exactly_once(sandbox):
    pid = sandbox.wait_running()
    stops = _stops_logged(sandbox)
    result = sandbox.site(collector_rotate_max_records=15000)
    assert result.returncode == 0, result.stdout[-3000:]
    new_pid = sandbox.wait_running()
    assert new_pid != pid
    assert _stops_logged(sandbox) == stops + 1  # one graceful stop (SIGTERM), then one start


def test_kill_9_is_followed_by_automatic_restart_and_no_loss(sandbox):
    pid = sandbox.wait_running()
    sandbox.wait_for_posts(more_than=0)
    sent = sandbox.sent_while_connected()
    time.sleep(1.5)  # everything in `sent` left the server more than 1 s before the kill
    sandbox.ssh(f"kill -9 {pid}")
    new_pid = sandbox.wait_running(timeout=30)
    assert new_pid != pid
    missing = sandbox.missing_from_bucket(sent)
    assert not missing, f"{len(missing)} of {len(sent)} posts sent before kill -9 never reached S3"


def test_stop_leaves_an_empty_spool_with_everything_in_s3(sandbox):
    sandbox.wait_running()
    sent = sandbox.sent_while_connected()
    time.sleep(1.5)
    sandbox.ssh("supervisorctl stop twittersnake", timeout=120)
    try:
        assert sandbox.state() in ("STOPPED", "EXITED")
        assert sandbox.spool_files() == []
        # No waiting: a stopped collector has uploaded everything it read.
        missing = sandbox.missing_from_bucket(sent, timeout=0)
        assert sent and not missing, f"{len(missing)} of {len(sent)} posts missing after stop"
    finally:  # the next tests expect a running collector
        sandbox.ssh("supervisorctl start twittersnake")
        sandbox.wait_running()


def test_reboot_while_streaming_loses_nothing_and_needs_no_ansible(sandbox):
    pid = sandbox.wait_running()
    process = sandbox.process_identity(pid)
    sandbox.wait_for_posts(more_than=0)
    sent = sandbox.sent_while_connected()
    time.sleep(1.5)  # everything in `sent` left the server more than 1 s before the reboot
    sandbox.world.reboot()
    # supervisord and the collector come back by themselves (systemd, autostart), no Ansible.
    new_pid = sandbox.wait_running(timeout=120)
    # A fresh boot may hand out the same pid number: the process is new if its start differs.
    assert sandbox.process_identity(new_pid) != process
    missing = sandbox.missing_from_bucket(sent)
    assert not missing, f"{len(missing)} of {len(sent)} posts sent before the reboot not in S3"
    # The billing ledger was not reset by the reboot: it holds every post X delivered before
    # it, and no more posts than X billed.
    counted = sandbox.ledger_ids()
    assert not sent - set(counted), "posts delivered before the reboot are not counted"
    # what X did not bill is not counted (X bills a few more: posts in a socket at a stop)
    assert len(counted) <= sandbox.billed_posts()
    again = sandbox.site()
    assert again.returncode == 0, again.stdout[-3000:]
    assert recap_changed(again.stdout) == 0, again.stdout[-5000:]
    assert sandbox.pid() == new_pid


def test_files_under_etc_twittersnake_have_private_modes(sandbox):
    listing = sandbox.ssh(
        "stat -c '%n %a %U' /etc/twittersnake /etc/twittersnake/collector.toml"
        " /etc/twittersnake/secrets"
        " "
        "/etc/twittersnake/secrets/x_bearer_token /etc/twittersnake/secrets/aws_credentials"
    )
    modes = {
        name: (mode, owner) for name, mode, owner in (line.split() for line in listing.splitlines())
    }
    assert modes["/etc/twittersnake/secrets"] == ("700", "twittersnake")
    assert modes["/etc/twittersnake/secrets/x_bearer_token"] == ("600", "twittersnake")
    assert modes["/etc/twittersnake/secrets/aws_credentials"] == ("600", "twittersnake")
    assert modes["/etc/twittersnake/collector.toml"][0] == "640"


def test_a_bad_token_stops_the_deploy_with_xs_answer_and_leaves_the_collector_running(sandbox):
    before = sandbox.pid()
    result = sandbox.site(vault_x_bearer_token="not-the-token")
    sandbox.extra.pop("vault_x_bearer_token")
    assert result.returncode != 0
    # X's answer on one line, before anything is installed: the running collector is untouched
    assert re.search(r"HTTP 401: Unauthorized: X rejected the bearer token", result.stdout)
    assert "not-the-token" not in result.stdout
    assert sandbox.state() == "RUNNING" and sandbox.pid() == before
    assert sandbox.ssh(f"cat {TOKEN_FILE}").strip() != "not-the-token"


def test_a_token_x_revokes_ends_in_fatal_or_exited_not_a_restart_loop(sandbox):
    # the token stops working while the collector runs (revoked on X's side): a restart meets 401
    sandbox.ssh(
        f"echo not-the-token > {TOKEN_FILE} && supervisorctl restart twittersnake", check=False
    )
    deadline = time.monotonic() + 60
    while sandbox.state() not in ("FATAL", "EXITED") and time.monotonic() < deadline:
        time.sleep(1)
    assert sandbox.state() in ("FATAL", "EXITED")
    time.sleep(5)
    assert sandbox.state() in ("FATAL", "EXITED")  # stays down: no loop
    log = sandbox.ssh(f"tail -n 50 {LOG}")
    assert re.search(r"401|rejected|unauthori", log, re.I), log
    assert "not-the-token" not in log
    # The deploy writes the good token back; the collector comes back.
    good = sandbox.site()
    assert good.returncode == 0, good.stdout[-3000:]
    sandbox.wait_running()


def test_the_token_appears_in_no_log(sandbox):
    token = sandbox.ssh(f"cat {TOKEN_FILE}").strip()
    assert token
    logs = sandbox.ssh("cat /var/log/twittersnake/* /var/log/supervisor/* 2>/dev/null", check=False)
    assert token not in logs
    assert all(token not in output for output in sandbox.outputs)


def gpg_key(home: Path, name: str) -> tuple[str, str]:
    """A throwaway signing key in `home` (no passphrase): (fingerprint, armoured public key)."""
    env = dict(os.environ, GNUPGHOME=str(home))
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.org>",
         "ed25519", "sign", "never"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-keys", f"{name}@example.org"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    fingerprint = re.search(r"(?m)^fpr:+([0-9A-F]{40}):", listing).group(1)
    public = subprocess.run(
        ["gpg", "--batch", "--armor", "--export", fingerprint],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return fingerprint, public


def test_a_signed_tag_deploys_and_an_unsigned_or_foreign_one_stops_before_the_checkout(
    sandbox, tmp_path
):
    """twittersnake_signing_keys: the version must be signed by one of them. A tag signed with the
    listed key deploys (the collector restarts on its commit); an unsigned tag or one signed by
    another key stops the deploy with git's verdict, and the checkout and the running collector
    stay as they were."""
    home = Path(tempfile.mkdtemp(prefix="gnupg-", dir="/tmp"))  # short: gpg-agent's socket path
    home.chmod(0o700)
    served = Path(sandbox.vars["sandbox_state_dir"]) / "git" / f"signed-{os.getpid()}.git"
    work = tmp_path / "work"
    env = dict(os.environ, GNUPGHOME=str(home))

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=Release", "-c", "user.email=release@example.org", *args],
            cwd=cwd, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    try:
        release, public = gpg_key(home, "release")
        other, _ = gpg_key(home, "other")
        # The deployed commit, then one commit per tag on top of it.
        git("clone", "-q", "--no-checkout", str(REPO), str(work), cwd=tmp_path)
        git("checkout", "-q", "--detach", sandbox.vars["twittersnake_version"])
        commits = {}
        for tag, signing in (("v-signed", release), ("v-unsigned", None), ("v-other", other)):
            git("commit", "-q", "--allow-empty", "-m", f"release {tag}")
            commits[tag] = git("rev-parse", "HEAD")
            sign = ["-u", signing] if signing else ["-a"]
            git("tag", *sign, "-m", tag, tag)
        git("clone", "-q", "--bare", str(work), str(served), cwd=tmp_path)
        url = f"git://127.0.0.1:{sandbox.vars['sandbox_git_port']}/{served.name}"
        before = sandbox.wait_running()

        signed = sandbox.site(
            twittersnake_repo_url=url, twittersnake_version="v-signed",
            twittersnake_signing_keys=[public],
        )  # fmt: skip
        assert signed.returncode == 0, signed.stdout[-5000:]
        assert sandbox.ssh(f"git -C {SRC} rev-parse HEAD").strip() == commits["v-signed"]
        running = sandbox.wait_running()
        assert running != before  # restarted once, on the signed commit
        modes = sandbox.ssh("stat -c '%a %U' /etc/twittersnake-git /etc/twittersnake-git/gnupg")
        assert modes.split() == ["700", "root", "700", "root"]
        again = sandbox.site()
        assert again.returncode == 0, again.stdout[-3000:]
        assert recap_changed(again.stdout) == 0, again.stdout[-5000:]
        assert sandbox.pid() == running

        for tag, verdict in (
            ("v-unsigned", "(git: error: no signature found)"),
            ("v-other", f"NO_PUBKEY {other[-16:]})"),
        ):
            refused = sandbox.site(twittersnake_version=tag)
            assert refused.returncode != 0
            assert (
                f'Task failed: Action failed: twittersnake_version "{tag}" is not signed by one'
                " of twittersnake_signing_keys: Failed to verify GPG signature of commit/tag"
                f' "{tag}" (git: '
            ) in refused.stdout + refused.stderr, refused.stdout[-5000:]
            assert verdict in refused.stdout + refused.stderr, refused.stdout[-5000:]
            assert sandbox.ssh(f"git -C {SRC} rev-parse HEAD").strip() == commits["v-signed"]
            assert sandbox.state() == "RUNNING" and sandbox.pid() == running
    finally:
        for key in ("twittersnake_repo_url", "twittersnake_version", "twittersnake_signing_keys"):
            sandbox.extra.pop(key, None)
        subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(served, ignore_errors=True)
    # The module's last deploy: the next one (the notebook's) goes back to the default version.
