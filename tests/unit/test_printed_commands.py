"""Commands a newcomer copies work as typed: Ansible and the repository's Python are in .venv/bin.

`make venv` installs ansible-playbook, ansible-vault and the collector's dependencies into
`.venv/`; nothing puts them on PATH. Every command the docs, the Makefile's demo and the
sandbox's closing lines show names `.venv/bin/` (the Makefile: `$(VENV)/bin/`).
"""

from __future__ import annotations

import re

from tests.conftest import REPO
from tests.sandbox import report

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A tool run with arguments, not preceded by a path (.venv/bin/, /opt/conda/...).
BARE = re.compile(r"(?<![\w/.$()-])(ansible-playbook|ansible-vault|ansible-galaxy)\s+[-\w@./]")
CODE = re.compile(r"```.*?```|`[^`]+`", re.S)


def bare_commands(text: str) -> list[str]:
    return [m.group(0) for code in CODE.findall(text) for m in BARE.finditer(code)]


def test_docs_run_ansible_from_the_venv() -> None:
    for path in DOCS:
        found = bare_commands(path.read_text())
        assert not found, f"{path.relative_to(REPO)}: {found} (write .venv/bin/...)"


def test_the_check_finds_a_bare_command() -> None:
    text = "Run `ansible-playbook site.yml` or\n```\nansible-vault edit x.yml\n```\n"
    assert bare_commands(text) == ["ansible-playbook s", "ansible-vault e"]
    assert bare_commands("`.venv/bin/ansible-playbook site.yml` and `ansible-playbook`") == []


def test_make_demo_prints_the_deploy_with_the_venv_path() -> None:
    recipe = (REPO / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    deploys = [line.strip() for line in recipe.splitlines() if "ansible-playbook" in line]
    assert deploys == [
        "$(VENV)/bin/ansible-playbook site.yml -i inventory/sandbox -e @.sandbox/vars.json"
    ]


def test_the_demo_ends_with_commands_that_work_as_printed() -> None:
    commands = [line.strip() for line in report.NEXT_STEPS if not line.startswith("==")]
    assert commands and all(c.startswith(".venv/bin/") for c in commands), commands
    assert f"{report.DEPLOY} --tags rules" in commands
