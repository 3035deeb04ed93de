"""One key prefix everywhere: the collector's keys, IAM policy, Athena location and listing.

The prefix is normalized by one function (collector.spool.layout.normalize_prefix); the roles
reach it through the `twittersnake_key_prefix` filter. These tests render the real role templates
with Ansible for the same prefix and compare, then let an IAM-enforcing moto judge the policy while
the collector signs with the key of the user that holds it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.analysis import loader
from collector.config import load_config
from collector.spool.layout import DEFAULT_PREFIX, data_file_name, object_key
from tests.collector_support import TOKEN, CollectorProcess, wait_until, write_config
from tests.conftest import REPO
from tests.fakes.x_server import FakeXServer

BUCKET = "prefix-test-bucket"

RENDER = """
- name: Render what the roles write for one prefix
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {repo}/roles/iam/defaults/main.yml
    - {repo}/roles/athena/defaults/main.yml
    - {repo}/roles/athena/vars/main.yml
    - {repo}/roles/collector/defaults/main.yml
    - {repo}/roles/collector/vars/main.yml
  vars:
    _collector_include_rules: true
    _policy: "{repo}/roles/iam/templates/collector-policy.json.j2"
    _toml: "{repo}/roles/collector/templates/collector.toml.j2"
  tasks:
    - name: Write the collector policy the iam role puts on the user
      ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.template', _policy) }}}}"
        dest: "{out}/policy.json"
        mode: "0600"
    - name: Write the Athena table location
      ansible.builtin.copy:
        content: "{{{{ _athena_location }}}}"
        dest: "{out}/athena_location.txt"
        mode: "0600"
    - name: Write the collector config the collector role renders
      ansible.builtin.copy:
        content: "{{{{ lookup('ansible.builtin.template', _toml) }}}}"
        dest: "{out}/collector.toml"
        mode: "0600"
"""


def render_roles(tmp_path: Path, prefix: str, **extra_vars: object) -> dict[str, object]:
    """The IAM policy, Athena location and collector.toml the roles write for `prefix` (and
    any other inventory variables given)."""
    out = tmp_path / "rendered"
    out.mkdir(exist_ok=True)
    playbook = tmp_path / "render.yml"
    playbook.write_text(RENDER.format(repo=REPO, out=out))
    extra = {
        "twittersnake_bucket": BUCKET,
        "twittersnake_prefix": prefix,
        "twittersnake_credentials_file": str(tmp_path / "creds.yml"),
        "twittersnake_repo_url": "https://example.invalid/repo.git",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
        **extra_vars,
    }
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), str(playbook), "-i", "localhost,"]
        + ["-e", json.dumps(extra)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return {
        "policy": json.loads((out / "policy.json").read_text()),
        "athena_location": (out / "athena_location.txt").read_text(),
        "collector_toml": tomllib.loads((out / "collector.toml").read_text()),
        "collector_toml_path": out / "collector.toml",
    }


@pytest.mark.parametrize("prefix", ["tweets/", "/research/x-posts/"])
def test_the_same_prefix_reaches_keys_policy_athena_and_the_listing(
    tmp_path: Path, prefix: str
) -> None:
    rendered = render_roles(tmp_path, prefix)
    normalized = prefix.strip("/")
    (tmp_path / "x_bearer_token").write_text(TOKEN)
    cfg = load_config(rendered["collector_toml_path"])  # what the collector reads on the host
    assert cfg.s3.prefix == normalized

    name = data_file_name("c1", datetime(2026, 11, 29, 23, 5, tzinfo=UTC), 7) + ".gz"
    key = object_key(cfg.s3.prefix, name)
    assert key == f"{normalized}/dt=2026-11-29/hour=23/{name}"

    statements = {s["Sid"]: s for s in rendered["policy"]["Statement"]}
    object_resource = statements["CreateObjectsUnderPrefix"]["Resource"]
    assert object_resource == f"arn:aws:s3:::{BUCKET}/{normalized}/*"
    assert statements["ReadObjectsUnderPrefix"]["Resource"] == object_resource
    assert re.fullmatch(re.escape(object_resource[:-1]) + ".*", f"arn:aws:s3:::{BUCKET}/{key}")
    listing = statements["ListUnderPrefix"]["Condition"]["StringLike"]["s3:prefix"]
    assert listing == [f"{normalized}/*"]

    assert rendered["athena_location"] == f"s3://{BUCKET}/{normalized}/"
    hour = datetime(2026, 11, 29, 23, tzinfo=UTC)
    assert loader.partition_prefix(cfg.s3.prefix, hour) == f"{normalized}/dt=2026-11-29/hour=23/"
    assert key.startswith(loader.partition_prefix(cfg.s3.prefix, hour))


def test_every_role_defaults_to_the_collectors_prefix() -> None:
    defaults = {}
    for path in sorted(REPO.glob("roles/*/defaults/main.yml")):
        for found in re.findall(r"twittersnake_prefix \| default\('([^']*)'\)", path.read_text()):
            defaults[path.parts[-3]] = found
    assert set(defaults) >= {"iam", "athena", "collector", "preflight"}, defaults
    assert set(defaults.values()) == {DEFAULT_PREFIX}, defaults


def test_a_trailing_slash_prefix_ships_under_the_iam_policy_the_role_writes(
    tmp_path: Path, moto_iam
) -> None:
    policy = render_roles(tmp_path, "tweets/")["policy"]
    moto_iam.client("s3").create_bucket(Bucket=BUCKET)
    collector_key = moto_iam.create_user("twittersnake-collector", policy)
    server = FakeXServer(token=TOKEN, keepalive_interval=1.0, count=30).start()
    try:
        config = write_config(tmp_path, server.url, bucket=BUCKET, max_seconds=0.5)
        config.write_text(config.read_text().replace('prefix = "tweets"', 'prefix = "tweets/"'))
        env = {**moto_iam.env(collector_key), "AWS_ENDPOINT_URL": moto_iam.url}
        config.write_text(
            config.read_text().replace('endpoint_url = ""', f'endpoint_url = "{moto_iam.url}"')
        )
        collector = CollectorProcess(config, env=env)
        try:
            s3 = moto_iam.client("s3")

            def landed() -> list[str]:
                listed = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
                keys = [item["Key"] for item in listed]
                # posts, not only the connection events (_events/) that ship beside them
                return keys if any("_events/" not in k for k in keys) else []

            keys = wait_until(landed, 60, 0.5)
        finally:
            collector.signal(signal.SIGTERM)
            code = collector.wait()
        assert code == 0, collector.log[-3000:]
        assert all(k.startswith(("tweets/dt=", "tweets/_events/dt=")) for k in keys), keys
        assert "AccessDenied" not in collector.log and "403" not in collector.log, collector.log
    finally:
        server.stop()
