"""The Miniforge stand-in the sandbox serves on loopback, and the wheelhouse behind it.

Miniforge3.sh honours the real installer's contract (`bash Miniforge3.sh -b -p PREFIX`, -u to
update, an error if PREFIX exists) and produces PREFIX/bin/conda (conda_standin.py) and
PREFIX/bin/python, so the conda role's download, checksum and install steps run for real.
The environment's packages come from a PEP 503 package index over a wheelhouse built here
(files/simple/), which the instance's pip uses through /etc/pip.conf (image.personalise): the
files the hash-locked requirements name, downloaded from PyPI, so their sha256 are PyPI's.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.sandbox import paths

INSTALLER_NAME = "Miniforge3.sh"

INSTALLER = """#!/bin/sh
# TwitterSnake sandbox stand-in for the Miniforge installer (no internet in the sandbox).
# Same contract as the real one: bash Miniforge3.sh -b [-u] [-f] -p PREFIX
set -eu
PREFIX="${{HOME:-/root}}/miniforge3"
UPDATE=0
FORCE=0
while getopts "bfhp:stu" opt; do
  case "$opt" in
    b|s|t) ;;
    f) FORCE=1 ;;
    u) UPDATE=1 ;;
    p) PREFIX="$OPTARG" ;;
    h) echo "usage: $0 [-b] [-f] [-h] [-p PREFIX] [-u]"; exit 0 ;;
    *) echo "usage: $0 [-b] [-f] [-h] [-p PREFIX] [-u]" >&2; exit 2 ;;
  esac
done
if [ -e "$PREFIX" ] && [ "$UPDATE" = 0 ] && [ "$FORCE" = 0 ]; then
  echo "ERROR: File or directory already exists: '$PREFIX'" >&2
  echo "If you want to update an existing installation, use the -u option." >&2
  exit 1
fi
echo "PREFIX=$PREFIX"
echo "Unpacking payload (sandbox stand-in: a python venv and a conda script) ..."
mkdir -p "$PREFIX"
[ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
mkdir -p "$PREFIX/envs" "$PREFIX/pkgs" "$PREFIX/conda-meta" "$PREFIX/etc"
echo "#!$PREFIX/bin/python" > "$PREFIX/bin/conda"
cat >> "$PREFIX/bin/conda" <<'TWITTERSNAKE_CONDA_STANDIN'
{conda_script}
TWITTERSNAKE_CONDA_STANDIN
chmod 0755 "$PREFIX/bin/conda"
echo "sandbox stand-in {version}" > "$PREFIX/conda-meta/history"
echo "installation finished."
"""


# The hash-locked requirements the instance installs with pip (`make lock`): the collector's (conda
# role) and the optional notebook role's.
LOCK_FILES = ("collector/requirements.lock", "roles/notebook/files/requirements.lock")

# The instance's interpreter (Debian 12's python3): wheels are chosen for it, not for this machine's
# Python (a newer 3.11.x here lets pip pick releases that need >= 3.11.5, e.g. soupsieve). `make
# lock` resolves for the same version (LOCK_PYTHON; tests/unit/test_conda_environment.py).
INSTANCE_PYTHON = "3.11.2"


def ensure_wheelhouse(log) -> Path:
    """Exactly the files the locks name for the instance, as PyPI serves them, so every sha256 on
    the instance matches (pip download --require-hashes --no-deps); cached per lock content."""
    locks = [paths.REPO / name for name in LOCK_FILES]
    key = "\n".join([f"python {INSTANCE_PYTHON}", *(lock.read_text() for lock in locks)])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    wheelhouse = paths.cache_dir() / f"wheelhouse-{digest}"
    with paths.cache_lock("-wheelhouse"):
        if wheelhouse.is_dir():
            return wheelhouse
        partial = wheelhouse.with_name(wheelhouse.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        log(f"building the wheelhouse for the instance from {', '.join(LOCK_FILES)}")
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet", "download"]
        pip += ["--require-hashes", "--no-deps", "--only-binary=:all:"]
        pip += ["--python-version", INSTANCE_PYTHON, "--dest", str(partial)]
        subprocess.run([*pip, *(arg for lock in locks for arg in ("-r", str(lock)))], check=True)
        partial.rename(wheelhouse)
    return wheelhouse


def project_name(wheel: str) -> str:
    """PEP 503 normalized project name of a wheel file name (PEP 427: name-version-...whl)."""
    return re.sub(r"[-_.]+", "-", wheel.split("-")[0]).lower()


def write_simple_index(index_dir: Path, wheelhouse: Path) -> None:
    """A PEP 503 simple repository over the wheelhouse: INDEX/<project>/index.html -> the wheels."""
    projects: dict[str, list[str]] = {}
    for wheel in sorted(wheelhouse.glob("*.whl")):
        projects.setdefault(project_name(wheel.name), []).append(wheel.name)
    partial = index_dir.with_name(index_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    links = "".join(f'<a href="{name}/">{name}</a>\n' for name in projects)
    (partial / "index.html").write_text(f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n")
    for name, wheels in projects.items():
        (partial / name).mkdir()
        links = "".join(f'<a href="../../wheelhouse/{w}">{w}</a>\n' for w in wheels)
        page = f"<!DOCTYPE html>\n<html><body>\n{links}</body></html>\n"
        (partial / name / "index.html").write_text(page)
    shutil.rmtree(index_dir, ignore_errors=True)
    partial.rename(index_dir)


def write_files(files_dir: Path, log) -> str:
    """Publish the installer, the wheelhouse and its simple index (files_dir/simple/, what the
    instance's /etc/pip.conf names); returns the installer's sha256."""
    files_dir.mkdir(parents=True, exist_ok=True)
    wheelhouse_link = files_dir / "wheelhouse"
    wheelhouse = ensure_wheelhouse(log)
    if not wheelhouse_link.is_symlink() or wheelhouse_link.resolve() != wheelhouse:
        wheelhouse_link.unlink(missing_ok=True)
        wheelhouse_link.symlink_to(wheelhouse)
    write_simple_index(files_dir / "simple", wheelhouse)
    conda_script = (Path(__file__).parent / "conda_standin.py").read_text().rstrip("\n")
    installer = INSTALLER.format(
        conda_script=conda_script,
        version=paths.MINIFORGE_VERSION,
    ).encode()
    sha256 = hashlib.sha256(installer).hexdigest()
    target = files_dir / INSTALLER_NAME
    if not target.exists() or target.read_bytes() != installer:
        target.write_bytes(installer)
        target.chmod(0o755)
    (files_dir / f"{INSTALLER_NAME}.sha256").write_text(sha256 + "\n")
    return sha256


if __name__ == "__main__":  # make sandbox-wheelhouse
    print(ensure_wheelhouse(lambda message: print(f"sandbox: {message}", file=sys.stderr)))
