"""The sandbox host's power supply: boots the Debian root with systemd as PID 1, again on reboot.

    unshare --mount --propagation=private -- python -m tests.sandbox.boot ROOT --cgroup NAME ...

Runs on this machine, not in the instance. It puts itself in a cgroup of its own (NAME, under
its current one, in every cgroup hierarchy systemd uses), so that several sandboxes' containers
never share one and `down` can find every process of this instance; mounts a tmpfs on
/run/systemd/nspawn in its private mount namespace (systemd-nspawn keeps its propagation
directory there; the host's /run is not one it can use); then runs

    systemd-nspawn --boot --keep-unit --register=no --directory=ROOT ...

in a loop, as systemd-nspawn@.service does with `RestartForceExitStatus=133`: exit status 133
means the container asked for a reboot, so it is booted again; any other status ends the loop.
The network is this machine's (no --private-network): sshd and the collector use loopback.
SIGTERM (or SIGINT) is passed to systemd-nspawn, which has the container's systemd shut down
in order (supervisord stops the collector, which uploads what is pending), and ends the loop.
Each boot increments the counter in BOOTS_FILE, which `Sandbox.reboot` waits on.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REBOOT_EXIT_STATUS = 133  # systemd-nspawn(1): "the container requested a reboot"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PR_SET_PDEATHSIG = 1

child: subprocess.Popen | None = None
stopping = False


def log(message: str) -> None:
    print(f"sandbox-boot: {message}", flush=True)


def cgroup_dirs(name: str) -> list[Path]:
    """NAME under this process's cgroup in the hierarchies systemd uses (v2, or v1 name=systemd).

    A hybrid host (cgroup v1 with name=systemd plus cgroup2 at unified/) has two; a pure cgroup2
    host has one. Other v1 controllers are left alone, as systemd-nspawn leaves them.
    """
    dirs = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "name=systemd":
            mount = CGROUP_ROOT / "systemd"
        elif controllers == "":
            unified = CGROUP_ROOT / "unified"
            mount = unified if unified.is_dir() else CGROUP_ROOT
        else:
            continue
        if (mount / "cgroup.procs").exists():
            dirs.append(mount / path.lstrip("/") / name)
    return dirs


def join_own_cgroup(name: str) -> None:
    for directory in cgroup_dirs(name):
        directory.mkdir(exist_ok=True)
        (directory / "cgroup.procs").write_text(f"{os.getpid()}\n")


def mount_nspawn_tmpfs() -> None:
    target = Path("/run/systemd/nspawn")
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev,size=4m", "sandbox-nspawn"]
        + [str(target)],
        check=True,
    )


def nspawn_command(root: Path, machine: str) -> list[str]:
    return [
        "systemd-nspawn",
        "--boot",
        "--keep-unit",
        "--register=no",
        f"--directory={root}",
        f"--machine={machine}",
        "--console=read-only",
        "--link-journal=no",
        "--quiet",
    ]


def die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def on_stop(signum, frame) -> None:
    global stopping
    stopping = True
    if child is not None and child.poll() is None:
        child.send_signal(signal.SIGTERM)  # systemd-nspawn: orderly shutdown of the container


def main(argv: list[str]) -> int:
    global child
    parser = argparse.ArgumentParser(prog="python -m tests.sandbox.boot")
    parser.add_argument("root", type=Path)
    parser.add_argument("--cgroup", required=True)
    parser.add_argument("--machine", default="twittersnake-sandbox")
    parser.add_argument("--boots-file", type=Path, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    join_own_cgroup(args.cgroup)
    mount_nspawn_tmpfs()
    boots = 0
    env = dict(os.environ, TERM="dumb", SYSTEMD_COLORS="0")
    while not stopping:
        boots += 1
        args.boots_file.write_text(f"{boots}\n")
        log(f"boot {boots}")
        child = subprocess.Popen(
            nspawn_command(args.root, args.machine),
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
        )
        if stopping:  # the signal came between the loop's test and the start
            child.send_signal(signal.SIGTERM)
        status = child.wait()
        if status != REBOOT_EXIT_STATUS or stopping:
            log(f"the container exited with status {status}")
            return 0 if stopping else status
        log("the container asked for a reboot")
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
