"""The deploy converges X's live rules to the inventory on every run, not when the file changes.

ansible-playbook runs the collector role's rules steps (rules_check.yml early, rules.yml after
the configuration) on the controller against the X stand-in, as `site.yml` and `--tags rules` do.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.collector_support import TOKEN, x_server_fixture
from tests.conftest import REPO
from tests.fakes.x_server import FakeXServer

PLAYBOOK = """
- name: The collector role's rules steps, as the deploy runs them
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Compare
      ansible.builtin.import_role:
        name: collector
        tasks_from: rules_check
    - name: Sync
      ansible.builtin.import_role:
        name: collector
        tasks_from: rules
"""


x_server = x_server_fixture(count=0)


def deploy(
    tmp_path: Path, x_url: str, rules: list[dict], *args: str
) -> subprocess.CompletedProcess:
    playbook = tmp_path / "rules.yml"
    playbook.write_text(PLAYBOOK)
    extra = {
        "collector_x_api_base_url": x_url,
        "vault_x_bearer_token": TOKEN,
        "collector_x_rules": rules,
        "collector_id": "deploy-1",
        "twittersnake_bucket": "rules-test-bucket",
        "twittersnake_credentials_file": "/nonexistent",
        "twittersnake_repo_url": "file:///nonexistent",
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook), *args,
         "-i", "localhost,", "-e", json.dumps(extra)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
             "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_FORCE_COLOR": "0",
             "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def changed(result: subprocess.CompletedProcess) -> int:
    return int(re.search(r"localhost\s+: ok=\d+\s+changed=(\d+)", result.stdout)[1])


def live(server: FakeXServer) -> set[tuple[str, str | None]]:
    return {(r["value"], r.get("tag")) for r in server.rules.values()}


def test_a_refused_rule_fails_every_deploy_with_x_reason(tmp_path: Path, x_server) -> None:
    rules = [
        {"value": "python lang:en", "tag": "python"},
        {"value": "(python OR rust", "tag": "langs"},
    ]
    reason = (
        "X refused x.rules '(python OR rust' (tag deploy-1:langs): UnprocessableEntity: "
        "Missing closing parenthesis for this one (at position 1)"
    )
    for _ in range(2):  # the second run of the same inventory fails as the first did
        result = deploy(tmp_path, x_server.url, rules)
        assert result.returncode == 2, result.stdout[-3000:]
        assert f"Action failed: {reason}\n" in result.stdout, result.stdout[-3000:]
        assert "Sync the live rules without restarting" not in result.stdout
        assert live(x_server) == set()  # stopped before anything changed
        assert TOKEN not in result.stdout + result.stderr


@pytest.mark.slow  # five ansible-playbook runs
def test_the_deploy_converges_to_the_live_rules_and_changes_only_when_it_syncs(
    tmp_path: Path, x_server
) -> None:
    rules = [
        {"value": "python lang:en", "tag": "python"},
        {"value": "(python OR rust)", "tag": "langs"},
    ]
    wanted = {("python lang:en", "deploy-1:python"), ("(python OR rust)", "deploy-1:langs")}
    x_server.rules["7"] = {"id": "7", "value": "someone else's", "tag": "theirs"}
    # amazon.aws's rhythm: check (changed), real (changed), check (not changed), real (not)
    for args, expected_changes in (("--check",), 1), ((), 1), (("--check",), 0), ((), 0):
        result = deploy(tmp_path, x_server.url, rules, *args)
        assert result.returncode == 0, result.stdout[-3000:]
        assert changed(result) == expected_changes, result.stdout[-3000:]
        if args:
            assert (
                "TASK [Sync the live rules without restarting]"
                not in result.stdout.replace("skipping", "")
                or "skipping: [localhost]" in result.stdout
            )
    assert live(x_server) == wanted | {("someone else's", "theirs")}
    # Someone deletes one of our rules on X: the next deploy, inventory unchanged, puts it back.
    (rule_id,) = [i for i, r in x_server.rules.items() if r["value"] == "(python OR rust)"]
    del x_server.rules[rule_id]
    result = deploy(tmp_path, x_server.url, rules)
    assert result.returncode == 0 and changed(result) == 1, result.stdout[-3000:]
    assert live(x_server) == wanted | {("someone else's", "theirs")}
