"""collector_x_fields reaches the collector: the role renders x.fields (a profile) or the
per-kind lists, and the collector loads them into the request it sends X."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from collector.config import load_config
from collector.source.fields import COMPACT, FULL, FieldSet
from tests.conftest import REPO
from tests.provision.test_prefix import render_roles


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (None, FULL),
        ("compact", COMPACT),
        (
            {"tweet_fields": ["created_at", "note_tweet"], "media_fields": ["alt_text"]},
            FieldSet(tweet_fields=("created_at", "note_tweet"), media_fields=("alt_text",)),
        ),
    ],
)
def test_the_role_renders_the_capture_profile_the_collector_loads(
    tmp_path: Path, fields: object, expected: FieldSet
) -> None:
    extra = {} if fields is None else {"collector_x_fields": fields}
    rendered = render_roles(tmp_path, "raw", **extra)
    assert load_config(rendered["collector_toml_path"]).x.fields == expected


PREFLIGHT = """
- name: Run the collector role's input checks
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {repo}/roles/collector/defaults/main.yml
  tasks:
    - name: Check the inputs
      ansible.builtin.include_role:
        name: collector
        tasks_from: preflight
"""


@pytest.mark.parametrize("fields", ["everything", {"tweet_field": ["lang"]}])
def test_a_wrong_collector_x_fields_fails_preflight_with_one_line(tmp_path, fields) -> None:
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(PREFLIGHT.format(repo=REPO))
    extra = {
        "collector_x_fields": fields,
        "twittersnake_bucket": "capture-bucket",
        "twittersnake_credentials_file": str(tmp_path / "creds.yml"),
        "twittersnake_repo_url": "https://example.invalid/repo.git",
        "ansible_python_interpreter": "{{ ansible_playbook_python }}",
    }
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [str(REPO / ".venv/bin/ansible-playbook"), str(playbook), "-i", "localhost,"]
        + ["-e", json.dumps(extra)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout[-2000:]
    expected = (
        'collector_x_fields must be "full", "compact" or a mapping of lists with keys among '
        "tweet_fields, expansions, user_fields, media_fields, poll_fields, place_fields, "
        f"got {json.dumps(fields)}"
    )
    assert expected in proc.stdout.replace("\\", ""), proc.stdout[-2000:]
