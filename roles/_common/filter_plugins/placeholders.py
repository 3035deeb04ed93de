"""Refuse the example values inventory/aws ships with, naming the line to edit.

    {{ values | twittersnake_placeholder_problems(patterns, [inventory_dir]) }}

`values` maps variable names to their values; a value matching one of `patterns` (regular
expressions, e.g. "^change-me") is a placeholder. Each one gives one line:

    twittersnake_bucket is still the example value "change-me-twittersnake-data":
    edit inventory/aws/group_vars/all/main.yml line 10

Secrets (names starting with vault_) are never shown, and an encrypted vault file cannot be
read here: the line then names the vault file to edit with ansible-vault.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

_VARS_DIRS = ("group_vars", "host_vars")


def _definitions(name: str, inventory_dirs: list[str]) -> list[tuple[Path, int]]:
    """(file, line number) of each plain-text `name:` line in the inventories' vars files."""
    found = []
    pattern = re.compile(rf"^{re.escape(name)}\s*:")
    for inventory in map(Path, inventory_dirs or []):
        for vars_dir in _VARS_DIRS:
            for path in sorted((inventory / vars_dir).rglob("*")):
                if path.suffix not in (".yml", ".yaml") or not path.is_file():
                    continue
                try:
                    text = path.read_text()
                except (OSError, UnicodeDecodeError):
                    continue
                if text.startswith("$ANSIBLE_VAULT"):
                    continue
                found += [
                    (path, number)
                    for number, line in enumerate(text.splitlines(), start=1)
                    if pattern.match(line)
                ]
    return found


def _shown(path: Path) -> str:
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def placeholder_problems(values: dict, patterns: list[str], inventory_dirs: list[str]) -> list[str]:
    problems = []
    for name, value in (values or {}).items():
        if not isinstance(value, str) or not any(re.search(p, value) for p in patterns):
            continue
        secret = name.startswith("vault_")
        what = "the example's placeholder" if secret else f"the example value {json.dumps(value)}"
        places = _definitions(name, inventory_dirs)
        if places:
            where = " or ".join(f"{_shown(path)} line {number}" for path, number in places)
            problems.append(f"{name} is still {what}: edit {where}")
        else:
            vault = [str(Path(d) / "group_vars/all/vault.yml") for d in inventory_dirs or []]
            target = vault[0] if vault else "your vault file"
            problems.append(
                f"{name} is still {what}: set it (ansible-vault edit {_shown(Path(target))})"
            )
    return problems


class FilterModule:
    def filters(self):
        return {"twittersnake_placeholder_problems": placeholder_problems}
