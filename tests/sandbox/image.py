"""The instance's Debian 12 root: built with debootstrap once, cached as a tarball, extracted.

The cached root looks like a fresh cloud image: systemd (booted as PID 1 by systemd-nspawn, see
boot.py), user `ubuntu` with passwordless sudo, sshd enabled, python3 (+ venv, apt bindings),
git, and apt sources on the Debian mirror, no machine id yet. What differs per sandbox (ssh port,
authorized key, host keys, machine id, hostname) is written at `up` time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from tests.sandbox import paths

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
PACKAGES = [
    "openssh-server",
    "sudo",
    "python3",
    "python3-venv",
    "python3-apt",
    "git",
    "ca-certificates",
    "procps",
    "iproute2",
    "acl",
    "locales",
    # systemd as PID 1, as on the EC2 instance (booted by systemd-nspawn); dbus for logind.
    "systemd",
    "systemd-sysv",
    "dbus",
    "libpam-systemd",
]
BUILD_REVISION = "3"  # bump when the build steps below change

APT_SOURCES = f"""Types: deb
URIs: {MIRROR}
Suites: {SUITE} {SUITE}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: {SECURITY_MIRROR}
Suites: {SUITE}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def tarball() -> Path:
    key = hashlib.sha256(f"{SUITE} {MIRROR} {PACKAGES} {BUILD_REVISION}".encode()).hexdigest()
    return paths.cache_dir() / f"debian-{SUITE}-root-{key[:10]}.tar.zst"


def chroot(root: Path, *command: str) -> None:
    subprocess.run(["chroot", str(root), *command], check=True, stdout=subprocess.DEVNULL)


def configure_image(root: Path) -> None:
    """What a cloud image has before first boot (no per-sandbox values here)."""
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    (root / "etc/apt/sources.list.d/debian.sources").write_text(APT_SOURCES)
    chroot(root, "useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "ubuntu")
    chroot(root, "usermod", "--password", "*", "ubuntu")  # no password, not "locked" for sshd
    sudoers = root / "etc/sudoers.d/90-cloud-init-users"
    sudoers.write_text("ubuntu ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Like a cloud image: each host gets its own id (personalise), none is baked in.
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    (root / "etc/locale.gen").write_text("C.UTF-8 UTF-8\nen_US.UTF-8 UTF-8\n")
    chroot(root, "locale-gen")
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)


def mounts_below(root: Path) -> list[str]:
    prefix = str(root) + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [point for point in points if point.startswith(prefix)]


def release_build_root(root: Path, log) -> None:
    """Stop what debootstrap left running in `root` and unmount what it left mounted there.

    debootstrap mounts /proc (and /sys) in the target and unmounts them on exit, which fails
    when a process a package started is still running: the mount stays, and tar, or deleting
    the build directory, would then walk into this machine's /proc.
    """
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                inside = Path(os.readlink(proc / "root")).is_relative_to(root)
            except OSError:
                continue
            if inside:
                log(f"stopping process {proc.name} that debootstrap left in the build root")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)
    for point in sorted(mounts_below(root), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)
    if mounts_below(root):
        raise RuntimeError(f"cannot unmount {mounts_below(root)}; not touching {root}")


def build(log) -> Path:
    """The cached tarball, built with debootstrap if missing (about 1-2 minutes)."""
    target = tarball()
    with paths.cache_lock():
        if target.exists():
            return target
        log(f"building the Debian {SUITE} root with debootstrap (cached as {target})")
        tmp = Path(tempfile.mkdtemp(dir=paths.cache_dir(), prefix="build-"))
        root = tmp / "root"
        try:
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}"]
                + [SUITE, str(root), MIRROR],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            release_build_root(root, log)
            configure_image(root)
            partial = tmp / "root.tar.zst"
            subprocess.run(
                ["tar", "-C", str(root), "--numeric-owner", "--xattrs", "--one-file-system"]
                + ["-I", "zstd -T0 -3", "-cpf", str(partial), "."],
                check=True,
            )
            partial.rename(target)
        finally:  # never delete through a mount (this machine's /proc): that raises first
            release_build_root(root, log)
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def extract(root: Path, log) -> None:
    """A fresh copy of the cached root at `root` (does nothing if it is already there)."""
    if (root / "etc/debian_version").exists():
        return
    source = build(log)
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    subprocess.run(
        ["tar", "-C", str(partial), "--numeric-owner", "--xattrs", "-I", "zstd"]
        + ["-xpf", str(source)],
        check=True,
    )
    partial.rename(root)


def personalise(
    root: Path, *, ssh_port: int, public_key: str, hostname: str, package_index: str
) -> None:
    """Per-sandbox values: sshd on 127.0.0.1:ssh_port, ubuntu's key, host keys, machine id, name,
    and pip's package index (the sandbox has no internet; a real host may have a mirror too).

    Host keys and the machine id are made once per root and survive reboots, as on a VM.
    """
    (root / "etc/pip.conf").write_text(f"[global]\nindex-url = {package_index}\n")
    sshd = root / "etc/ssh/sshd_config.d/10-sandbox.conf"
    sshd.write_text(
        f"Port {ssh_port}\nListenAddress 127.0.0.1\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin no\n"
    )
    if not list((root / "etc/ssh").glob("ssh_host_*_key")):
        subprocess.run(["ssh-keygen", "-A", "-f", str(root)], check=True, stdout=subprocess.DEVNULL)
    machine_id = root / "etc/machine-id"
    if not machine_id.read_text().strip():
        machine_id.write_text(uuid.uuid4().hex + "\n")
    home = root / "home/ubuntu"
    uid, gid = home.stat().st_uid, home.stat().st_gid
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    authorized = ssh_dir / "authorized_keys"
    authorized.write_text(public_key.strip() + "\n")
    authorized.chmod(0o600)
    for path in (ssh_dir, authorized):
        shutil.chown(path, uid, gid)
    (root / "etc/hostname").write_text(hostname + "\n")
    (root / "etc/hosts").write_text(
        f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n::1 localhost ip6-localhost ip6-loopback\n"
    )


if __name__ == "__main__":  # make sandbox-image (stdlib only: runs before the venv exists)
    print(build(lambda message: print(f"sandbox: {message}", file=sys.stderr)))
