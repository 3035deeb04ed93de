"""`conda` of the sandbox's Miniforge stand-in (installed as PREFIX/bin/conda on the instance).

Miniforge cannot be downloaded in the sandbox (no internet), so the stand-in installer puts
this script in place of conda. It implements what the conda role calls, with the same
arguments and exit codes as conda; an environment is a python venv (the instance's python3,
for `python=3.11` from conda-forge). The file's `pip:` section is installed as conda does it:
`python -m pip install -U -r <file with those lines> --exists-action=b` in the new environment,
with pip's own configuration: on the sandbox host /etc/pip.conf names the sandbox's package
index (the wheelhouse built on the controller), as a mirror would on a real host.

    conda --version | conda info [--json] | conda env list [--json] | conda info --envs
    conda env create -f FILE (-p PREFIX | -n NAME) [-y] [-q] [--json]   (fails if it exists)
    conda env update -f FILE (-p PREFIX | -n NAME) [--prune] [-q] [--json]  (creates if missing)
    conda env remove (-p PREFIX | -n NAME) [-y]
    conda list (-p PREFIX | -n NAME) [--json]
    conda clean ... | conda config ...   (accepted, nothing to do)

Conda dependencies other than python and pip are installed with pip under the same name
(`pkg=1.2` becomes `pkg==1.2.*`). Like conda, it records each command line in the
environment's conda-meta/history (`# cmd: ...`). Runs with the instance's python3: stdlib only.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT_PREFIX = Path(__file__).resolve().parent.parent
VERSION = "24.11.3"
SKIPPED = {"python", "pip"}


def fail(message: str, code: int = 1) -> None:
    print(f"CondaError: {message}", file=sys.stderr)
    sys.exit(code)


def parse_environment_file(path: Path) -> tuple[str | None, list[str], list[str]]:
    """(name, conda deps, pip deps) of an environment.yml (the subset of YAML such files use)."""
    name, conda_deps, pip_deps = None, [], []
    section, pip_indent = None, None
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip() or line.strip() == "---":
            continue
        indent = len(line) - len(line.lstrip())
        text = line.strip()
        if indent == 0:
            key, _, value = text.partition(":")
            section, pip_indent = key.strip(), None
            if section == "name":
                name = value.strip().strip("'\"")
            continue
        if section != "dependencies" or not text.startswith("-"):
            continue
        item = text[1:].strip().strip("'\"")
        if item.rstrip(":").strip() == "pip" and item.endswith(":"):
            pip_indent = indent
        elif pip_indent is not None and indent > pip_indent:
            pip_deps.append(item)
        else:
            pip_indent = None
            conda_deps.append(item)
    return name, conda_deps, pip_deps


def conda_to_pip(spec: str) -> str | None:
    spec = spec.split("::")[-1].strip()
    match = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    if not match:
        return spec
    name, constraint = match.group(1), match.group(2).replace(" ", "")
    if name.lower() in SKIPPED:
        return None
    if constraint.startswith("=") and not constraint.startswith("=="):
        version = constraint[1:].split("=")[0]
        constraint = f"=={version}" if version.endswith("*") else f"=={version}.*"
    return name + constraint


def target_prefix(args) -> Path:
    if getattr(args, "prefix", None):
        return Path(args.prefix).resolve()
    if getattr(args, "name", None):
        return ROOT_PREFIX if args.name == "base" else ROOT_PREFIX / "envs" / args.name
    return ROOT_PREFIX


def environments() -> list[str]:
    envs = [str(ROOT_PREFIX)]
    envs_dir = ROOT_PREFIX / "envs"
    if envs_dir.is_dir():
        envs += [str(p) for p in sorted(envs_dir.iterdir()) if (p / "conda-meta").is_dir()]
    return envs


def pip_install(prefix: Path, requirements: list[str], env_file: Path, quiet: bool) -> None:
    """What conda does with an environment file's `pip:` section (and the mapped conda deps)."""
    if not requirements:
        return
    # conda writes the lines to a requirements file next to the environment file.
    with tempfile.NamedTemporaryFile(
        "w", prefix="condaenv.", suffix=".requirements.txt", dir=env_file.parent, delete=False
    ) as listing:
        listing.write("\n".join(requirements) + "\n")
    pip = [str(prefix / "bin" / "python"), "-m", "pip", "install", "-U", "-r", listing.name]
    pip += ["--exists-action=b", "--disable-pip-version-check"] + (["--quiet"] if quiet else [])
    try:
        if subprocess.run(pip).returncode != 0:
            fail(f"Pip failed: pip could not install the environment's packages into {prefix}")
    finally:
        os.unlink(listing.name)


def build_environment(prefix: Path, env_file: Path, quiet: bool) -> None:
    _, conda_deps, pip_deps = parse_environment_file(env_file)
    if not (prefix / "bin" / "python").exists():
        base_python = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base_python, "-m", "venv", str(prefix)], check=True)
    requirements = [r for r in (conda_to_pip(d) for d in conda_deps) if r] + pip_deps
    pip_install(prefix, requirements, env_file, quiet)
    meta = prefix / "conda-meta"
    meta.mkdir(exist_ok=True)
    shutil.copyfile(env_file, meta / "environment.yml")
    with open(meta / "history", "a") as history:  # conda's format: one block per command
        history.write(f"==> {time.strftime('%Y-%m-%d %H:%M:%S')} <==\n")
        history.write(f"# cmd: {' '.join(sys.argv)}\n# conda version: {VERSION}\n")
        history.writelines(f"# pip: {r}\n" for r in requirements)


def env_create(args) -> None:
    env_file = Path(args.file)
    if not env_file.is_file():
        fail(f"EnvironmentFileNotFound: '{env_file}' file not found")
    if not args.prefix and not args.name:
        args.name = parse_environment_file(env_file)[0]
    prefix = target_prefix(args)
    if args.action == "create" and (prefix / "conda-meta").is_dir() and not args.yes:
        fail(f"prefix already exists: {prefix}")
    build_environment(prefix, env_file, args.quiet)
    if args.json:
        print(json.dumps({"success": True, "prefix": str(prefix)}))
    elif not args.quiet:
        print(f"\n# To activate this environment, use\n#\n#     $ conda activate {prefix}\n")


def env_remove(args) -> None:
    prefix = target_prefix(args)
    if prefix == ROOT_PREFIX:
        fail("cannot remove the base environment")
    if prefix.exists():
        shutil.rmtree(prefix)


def env_list(args) -> None:
    if args.json:
        print(json.dumps({"envs": environments()}, indent=2))
        return
    print("# conda environments:\n#")
    for env in environments():
        label = "base" if env == str(ROOT_PREFIX) else Path(env).name
        print(f"{label:<24} {env}")


def package_list(args) -> None:
    prefix = target_prefix(args)
    if not (prefix / "conda-meta").is_dir():
        fail(f"EnvironmentLocationNotFound: Not a conda environment: {prefix}")
    listing = subprocess.run(
        [str(prefix / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    packages = [
        {"name": p["name"].lower(), "version": p["version"], "channel": "pypi"}
        for p in json.loads(listing)
    ]
    if args.json:
        print(json.dumps(packages, indent=2))
    else:
        for package in packages:
            print(f"{package['name']:<30} {package['version']:<16} pypi")


def info(args) -> None:
    details = {
        "conda_version": VERSION,
        "root_prefix": str(ROOT_PREFIX),
        "envs": environments(),
        "envs_dirs": [str(ROOT_PREFIX / "envs")],
        "platform": "linux-64",
        "sandbox_stand_in": True,
    }
    if args.envs:
        env_list(args)
    elif args.json:
        print(json.dumps(details, indent=2))
    else:
        for key, value in details.items():
            print(f"{key:>20} : {value}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="conda", description="sandbox stand-in for conda")
    top.add_argument("--version", "-V", action="version", version=f"conda {VERSION}")
    commands = top.add_subparsers(dest="command", required=True)

    def target(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-p", "--prefix")
        sub.add_argument("-n", "--name")
        sub.add_argument("--json", action="store_true")
        sub.add_argument("-q", "--quiet", action="store_true")
        sub.add_argument("-y", "--yes", action="store_true")

    env = commands.add_parser("env").add_subparsers(dest="action", required=True)
    for action in ("create", "update"):
        sub = env.add_parser(action)
        target(sub)
        sub.add_argument("-f", "--file", default="environment.yml")
        sub.add_argument("--prune", action="store_true")
        sub.set_defaults(handler=env_create)
    for action in ("remove", "list"):
        sub = env.add_parser(action)
        target(sub)
        sub.set_defaults(handler=env_remove if action == "remove" else env_list)
    sub = commands.add_parser("list")
    target(sub)
    sub.set_defaults(handler=package_list)
    sub = commands.add_parser("info")
    target(sub)
    sub.add_argument("-e", "--envs", action="store_true")
    sub.set_defaults(handler=info)
    for name in ("clean", "config"):
        sub = commands.add_parser(name)
        sub.add_argument("rest", nargs=argparse.REMAINDER)
        sub.set_defaults(handler=lambda args: None)
    return top


def main() -> None:
    os.umask(0o022)
    args = parser().parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
