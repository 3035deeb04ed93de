"""The instance's conda environment: one source for the Python pins, the role's own commands.

collector/environment.yml takes python and pip from conda-forge, nothing else; every package comes
from PyPI through a hash-locked requirements file (collector/requirements.lock, and the notebook
role's roles/notebook/files/requirements.lock) that `make lock` resolves from the requirements.in
beside it, at exactly the versions requirements.txt pins, where the test suite runs the same code
(conda-forge's recipes lag PyPI: its tweepy was at 4.15.0 when we pinned 4.17.0). The instance
installs each lock with `pip install --require-hashes --no-deps`: a lock line without a hash, or
a lock that no longer agrees with the pins, is caught here, before a deploy.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import REPO
from tests.sandbox import miniforge

COLLECTOR_ENVIRONMENT = REPO / "collector/environment.yml"
COLLECTOR_LOCK = REPO / "collector/requirements.lock"
LOCKS = [REPO / name for name in miniforge.LOCK_FILES]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)$")
LOCKED = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)((?:\s+--hash=\S+)*)$")
SHA256 = re.compile(r"^--hash=sha256:[0-9a-f]{64}$")
FIX = "run `make lock` and commit the lock"
# PEP 508 environment markers of the instance (Linux x86_64, the locks' Python), no extras.
INSTANCE_MARKERS = {
    "python_version": miniforge.INSTANCE_PYTHON.rsplit(".", 1)[0],
    "python_full_version": miniforge.INSTANCE_PYTHON,
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "extra": "",
}


def normalized(name: str) -> str:
    """PEP 503 project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    """{project: version} of a requirements file whose every line is `name==version`."""
    found = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            match = PIN.match(line)
            assert match, f"{path.relative_to(REPO)}: {line!r} is not pinned with =="
            found[normalized(match.group(1))] = match.group(2)
    return found


def locked(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{project: (version, hashes)} of a hash-locked requirements file; fails naming the first
    entry that is not `name==version` followed by sha256 hashes."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = re.sub(r"\\\n", " ", path.read_text())  # continuation lines
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = LOCKED.match(line)
        name = normalized(match.group(1)) if match else line.split()[0]
        assert match, (
            f"{path.relative_to(REPO)}: {name}: {line[:80]!r} is not"
            f" `name==version --hash=sha256:...`; {FIX}"
        )
        hashes = match.group(3).split()
        assert hashes and all(SHA256.match(h) for h in hashes), (
            f"{path.relative_to(REPO)}: {name}=={match.group(2)} has no sha256 hash; {FIX}"
        )
        entries[name] = (match.group(2), hashes)
    return entries


def test_conda_forge_gives_only_python_and_pip():
    spec = yaml.safe_load(COLLECTOR_ENVIRONMENT.read_text())
    python = miniforge.INSTANCE_PYTHON.rsplit(".", 1)[0]
    # the sandbox host's python3 stands in for it; no `pip:` section: pip installs only the lock
    assert spec["dependencies"] == [f"python={python}", "pip"], spec["dependencies"]


def test_the_locks_are_resolved_for_the_instances_python():
    makefile = (REPO / "Makefile").read_text()
    assert f"\nLOCK_PYTHON := {miniforge.INSTANCE_PYTHON}\n" in makefile
    assert "--python-platform x86_64-unknown-linux-gnu" in makefile  # the instance is Linux x86_64


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_locked_package_is_pinned_with_its_sha256(lock):
    entries = locked(lock)
    assert entries, f"{lock.relative_to(REPO)} is empty; {FIX}"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_input_is_pinned_as_requirements_txt_pins_it_and_locked_at_that_version(lock):
    requirements_txt = pins(REPO / "requirements.txt")
    requirements_in = lock.with_suffix(".in")
    inputs = pins(requirements_in)
    assert inputs, f"{requirements_in.relative_to(REPO)}: no packages"
    entries = locked(lock)
    for name, version in inputs.items():
        # The notebook's JupyterLab is the one input the controller's tests do not import.
        if name in requirements_txt or lock == COLLECTOR_LOCK:
            assert requirements_txt.get(name) == version, (
                f"{requirements_in.relative_to(REPO)}: {name}=={version},"
                f" requirements.txt {requirements_txt.get(name)}"
            )
        assert entries.get(name, ("missing",))[0] == version, (
            f"{lock.relative_to(REPO)}: {name} {entries.get(name, ('missing',))[0]},"
            f" {requirements_in.relative_to(REPO)} pins {version}; {FIX}"
        )


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: str(p.relative_to(REPO)))
def test_a_package_the_lock_shares_with_requirements_txt_has_its_version(lock):
    """Transitive packages too: one requirements.txt also pins (numpy for matplotlib, boto3's
    for moto) is locked at that version."""
    requirements_txt = pins(REPO / "requirements.txt")
    for name, (version, _) in locked(lock).items():
        if name in requirements_txt:
            assert requirements_txt[name] == version, (
                f"{lock.relative_to(REPO)}: {name}=={version}, requirements.txt pins"
                f" {requirements_txt[name]}; {FIX}"
            )


def test_every_dependency_of_a_locked_package_is_locked_too():
    """--no-deps installs the lock and nothing else: a package whose dependency is missing from
    it would fail at import on the instance. Checked offline for the locked packages this
    virtualenv has at the same version (their metadata lists their dependencies)."""
    collector = locked(COLLECTOR_LOCK)
    checked = set()
    for lock in LOCKS:
        entries = {**collector, **locked(lock)}
        for name, (version, _) in locked(lock).items():
            try:
                distribution = importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                continue
            if distribution.version != version:
                continue
            checked.add(name)
            for line in distribution.requires or []:
                requirement = Requirement(line)
                if requirement.marker and not requirement.marker.evaluate(INSTANCE_MARKERS):
                    continue
                dependency = normalized(requirement.name)
                assert dependency in entries, (
                    f"{lock.relative_to(REPO)}: {name}=={version} needs {requirement},"
                    f" which is not in the lock; {FIX}"
                )
                assert requirement.specifier.contains(entries[dependency][0], prereleases=True), (
                    f"{lock.relative_to(REPO)}: {name}=={version} needs {requirement},"
                    f" the lock has {dependency}=={entries[dependency][0]}; {FIX}"
                )
    # requirements.txt pins the collector's own packages: this virtualenv has them at those versions
    assert set(pins(COLLECTOR_LOCK.with_suffix(".in"))) <= checked


def test_the_notebooks_lock_keeps_the_collectors_versions():
    """Both locks go into one environment with --no-deps: a package in both is at one version."""
    collector = locked(COLLECTOR_LOCK)
    for lock in LOCKS:
        for name, (version, hashes) in locked(lock).items():
            if name in collector:
                assert (version, sorted(hashes)) == (
                    collector[name][0],
                    sorted(collector[name][1]),
                ), (
                    f"{lock.relative_to(REPO)}: {name}=={version}, collector/requirements.lock"
                    f" {collector[name][0]}; {FIX}"
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
