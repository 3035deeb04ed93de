"""Every role's meta/argument_specs.yml mirrors its defaults/main.yml key by key: each default is
declared, each declared option without a default is required, and a literal default has the
declared type and is one of the declared choices. So a typo or a wrong type in an inventory fails
before anything runs, and the spec cannot drift from the defaults it describes (the check
prometheus-community runs over its roles)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = sorted(path for path in (REPO / "roles").iterdir() if path.is_dir())

# argument_specs types -> the YAML values a literal default of that type may be.
TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "path": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def load(path: Path) -> dict[str, Any]:
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def main_options(role: Path) -> dict[str, dict[str, Any]]:
    specs = load(role / "meta" / "argument_specs.yml").get("argument_specs", {})
    return (specs.get("main") or {}).get("options") or {}


def type_problem(name: str, value: Any, spec: dict[str, Any]) -> str | None:
    """Why a literal default does not fit its spec, or None (templated values are not judged)."""
    if isinstance(value, str) and "{{" in value:
        return None
    kind = spec.get("type", "str")
    allowed = TYPES.get(kind)
    fits = allowed is None or (
        isinstance(value, allowed) and not (kind in ("int", "float") and isinstance(value, bool))
    )
    if not fits:
        return f"{name}: default {value!r} is not of type {kind}"
    if "choices" in spec and value not in spec["choices"]:
        return f"{name}: default {value!r} is not one of {spec['choices']}"
    elements = TYPES.get(spec.get("elements", ""))
    if kind == "list" and elements:
        wrong = [item for item in value if not isinstance(item, elements)]
        if wrong and not all(isinstance(w, str) and "{{" in w for w in wrong):
            return f"{name}: elements {wrong!r} are not of type {spec['elements']}"
    return None


def parity_problems(role: Path) -> list[str]:
    defaults = load(role / "defaults" / "main.yml")
    options = main_options(role)
    problems = [
        f"{name}: in defaults, not in argument_specs" for name in defaults if name not in options
    ]
    problems += [
        f"{name}: in argument_specs without a default, and not required"
        for name, spec in options.items()
        if name not in defaults and not spec.get("required")
    ]
    for name, value in defaults.items():
        if name in options and (problem := type_problem(name, value, options[name])):
            problems.append(problem)
    return problems


def test_every_role_is_checked() -> None:
    names = {role.name for role in ROLES}
    assert {"collector", "supervisor", "notebook", "conda", "preflight", "bucket", "iam"} <= names
    with_defaults = [role.name for role in ROLES if (role / "defaults" / "main.yml").is_file()]
    assert all(main_options(REPO / "roles" / name) for name in with_defaults), with_defaults


@pytest.mark.parametrize("role", ROLES, ids=[role.name for role in ROLES])
def test_argument_specs_mirror_the_defaults_key_by_key(role: Path) -> None:
    assert parity_problems(role) == []


def test_a_default_missing_from_the_spec_or_of_the_wrong_type_is_found(tmp_path: Path) -> None:
    role = tmp_path / "demo"
    (role / "defaults").mkdir(parents=True)
    (role / "meta").mkdir()
    (role / "defaults" / "main.yml").write_text(
        "demo_port: '8080'\ndemo_mode: fast\ndemo_typo: 1\ndemo_flags: [1, 2]\n"
    )
    (role / "meta" / "argument_specs.yml").write_text(
        "argument_specs:\n  main:\n    options:\n"
        "      demo_port: {type: int}\n"
        "      demo_mode: {type: str, choices: [slow, steady]}\n"
        "      demo_flags: {type: list, elements: str}\n"
        "      demo_unset: {type: str}\n"
    )
    assert parity_problems(role) == [
        "demo_typo: in defaults, not in argument_specs",
        "demo_unset: in argument_specs without a default, and not required",
        "demo_port: default '8080' is not of type int",
        "demo_mode: default 'fast' is not one of ['slow', 'steady']",
        "demo_flags: elements [1, 2] are not of type str",
    ]
