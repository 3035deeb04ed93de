"""Pinned code: the deploy refuses a moving branch as twittersnake_version.

A branch moves: whoever can push to it gets root and every secret at the next `site.yml`. The
collector role asks the repository (git ls-remote, on the controller, before anything reaches
the instance) whether the version is a branch; a 40-hex commit and a tag pass,
`twittersnake_allow_branch: true` lets a branch through on purpose.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PLAYBOOK = """
- name: The collector role's version check, as the deploy runs it
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check
      ansible.builtin.import_role:
        name: collector
        tasks_from: version_check
"""


@pytest.fixture(scope="module")
def origin(tmp_path_factory) -> tuple[str, str]:
    """A repository with branch `main`, tag `v1.0.0` and branch `release`: (file URL, commit)."""
    root = tmp_path_factory.mktemp("origin")
    work = root / "work"

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=cwd, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    work.mkdir()
    git("init", "-q", "-b", "main")
    (work / "README").write_text("x\n")
    git("add", "README")
    git("commit", "-qm", "first")
    git("tag", "v1.0.0")
    git("branch", "release")
    git("clone", "-q", "--bare", str(work), str(root / "origin.git"), cwd=root)
    return f"file://{root / 'origin.git'}", git("rev-parse", "HEAD")


def check(
    tmp_path: Path, url: str, version: str, playbook: Path | None = None, **extra
) -> subprocess.CompletedProcess:
    if playbook is None:
        playbook = tmp_path / "version.yml"
        playbook.write_text(PLAYBOOK)
    variables = {
        "twittersnake_repo_url": url,
        "twittersnake_version": version,
        "twittersnake_bucket": "version-test-bucket",
        "twittersnake_credentials_file": "/nonexistent",
        **extra,
    }
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), str(playbook),
         "-i", "localhost,", "-e", json.dumps(variables)],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
             "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_FORCE_COLOR": "0",
             "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("branch", ["main", "release"])
def test_a_branch_version_is_refused_in_one_line(tmp_path, origin, branch):
    url, _ = origin
    result = check(tmp_path, url, branch)
    assert result.returncode == 2, result.stdout[-3000:]
    assert (
        f'twittersnake_version "{branch}" is a branch of {url} (a moving target: whoever pushes '
        "to it deploys as root); pin a commit (40 hex digits) or a tag, or set "
        "twittersnake_allow_branch: true" in result.stdout
    ), result.stdout[-3000:]


def test_a_commit_a_tag_or_an_allowed_branch_passes(tmp_path, origin):
    url, commit = origin
    for version, extra in (
        (commit, {}),
        ("v1.0.0", {}),
        ("main", {"twittersnake_allow_branch": True}),
    ):
        result = check(tmp_path, url, version, **extra)
        assert result.returncode == 0, (version, result.stdout[-3000:])


def test_a_version_the_repository_does_not_have_or_cannot_be_asked_is_refused(tmp_path, origin):
    url, _ = origin
    result = check(tmp_path, url, "v9.9.9")
    assert result.returncode == 2
    assert 'twittersnake_version "v9.9.9" is neither a tag nor a commit of' in result.stdout
    result = check(tmp_path, "file:///nonexistent/repo.git", "v1.0.0")
    assert result.returncode == 2
    assert 'twittersnake_version "v1.0.0" cannot be checked: git ls-remote' in result.stdout


PREFLIGHT = """
- name: The collector role's input checks, as the deploy runs them
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Check
      ansible.builtin.import_role:
        name: collector
        tasks_from: preflight
"""

PUBLIC_KEY = (
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ2xkYRYJKwYBBAHaRw8BAQdA\n=abcd\n"
    "-----END PGP PUBLIC KEY BLOCK-----\n"
)


def test_a_signing_key_that_is_not_an_armoured_public_key_is_refused_naming_it(tmp_path, origin):
    url, _ = origin
    playbook = tmp_path / "preflight.yml"
    playbook.write_text(PREFLIGHT)
    private = PUBLIC_KEY.replace("PUBLIC", "PRIVATE")
    for keys, expected in (
        ([PUBLIC_KEY, "ABCD1234ABCD1234"], "collector_signing_keys item 2 "),
        ([private, PUBLIC_KEY], "collector_signing_keys item 1 "),
    ):
        result = check(tmp_path, url, "v1.0.0", twittersnake_signing_keys=keys, playbook=playbook)
        assert result.returncode == 2, result.stdout[-3000:]
        assert (
            expected + "(twittersnake_signing_keys, counting from 1) must be an ASCII-armoured "
            'OpenPGP public key ("-----BEGIN PGP PUBLIC KEY BLOCK-----"' in result.stdout
        ), result.stdout[-3000:]
    # Well-formed keys pass the input checks (the run stops later, at the missing credentials).
    result = check(
        tmp_path, url, "v1.0.0", twittersnake_signing_keys=[PUBLIC_KEY], playbook=playbook
    )
    assert "collector_signing_keys" not in result.stdout, result.stdout[-3000:]
    assert re.search(
        r"TASK \[collector : Stop on invalid collector inputs\] \**\nskipping", result.stdout
    ), result.stdout[-3000:]
