"""The instance's conda environment: one source for the Python pins, the role's own commands.

collector/environment.yml takes python and pip from conda-forge and every package through its
`pip:` section at exactly the version requirements.txt pins, where the test suite runs the same
code (conda-forge's recipes lag PyPI: its tweepy was at 4.15.0 when we pinned 4.17.0).
"""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO
from tests.sandbox import miniforge

ENVIRONMENT_FILES = [REPO / name for name in miniforge.ENVIRONMENT_FILES]
COLLECTOR_ENVIRONMENT = REPO / "collector/environment.yml"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)$")


def normalized(name: str) -> str:
    """PEP 503 project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_pins() -> dict[str, str]:
    pins = {}
    for raw in (REPO / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            match = PIN.match(line)
            assert match, f"requirements.txt: {line!r} is not pinned with =="
            pins[normalized(match.group(1))] = match.group(2)
    return pins


def dependencies(path) -> tuple[list[str], list[str]]:
    """(conda specs, pip lines) of an environment file."""
    spec = yaml.safe_load(path.read_text())
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    pip = [line for d in spec["dependencies"] if isinstance(d, dict) for line in d["pip"]]
    return conda, pip


def test_conda_forge_gives_only_python_and_pip():
    for path in ENVIRONMENT_FILES:
        conda, _ = dependencies(path)
        names = sorted(re.split(r"[=<>! ]", spec, maxsplit=1)[0] for spec in conda)
        assert names in (["pip"], ["pip", "python"]), f"{path}: conda packages {conda}"
    conda, _ = dependencies(COLLECTOR_ENVIRONMENT)
    python = miniforge.INSTANCE_PYTHON.rsplit(".", 1)[0]
    assert f"python={python}" in conda  # the sandbox host's python3 stands in for it


def test_every_pip_pin_of_the_instance_equals_requirements_txt():
    pins = requirements_pins()
    for path in ENVIRONMENT_FILES:
        _, pip = dependencies(path)
        assert pip, f"{path}: no pip section"
        for line in pip:
            match = PIN.match(line)
            assert match, f"{path}: {line!r} is not pinned with =="
            name, version = normalized(match.group(1)), match.group(2)
            # The notebook's JupyterLab is the one package the controller's tests do not import.
            if name in pins or path == COLLECTOR_ENVIRONMENT:
                assert pins.get(name) == version, (
                    f"{path}: {name}=={version}, requirements.txt {pins.get(name)}"
                )


def test_the_sandbox_keeps_the_conda_roles_commands():
    """The sandbox inventory swaps the installer's source only; the commands are the role's."""
    sandbox = {}
    for path in (REPO / "inventory/sandbox/group_vars/all").glob("*.yml"):
        sandbox.update(yaml.safe_load(path.read_text()) or {})
    overridden = sorted(k for k in sandbox if k.startswith(("conda_", "_conda_")))
    assert overridden == [
        "conda_installer_sha256",
        "conda_installer_url",
        "conda_miniforge_version",
    ]
