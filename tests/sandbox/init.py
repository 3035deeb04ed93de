#!/usr/bin/python3
"""PID 1 of the sandbox instance. Copied into the Debian root as /usr/local/sbin/sandbox-init.

It runs with the instance's own python3 (stdlib only) inside the chroot and its PID namespace:
boots like a cloud VM up to "reachable over ssh" (host keys, the services that `update-rc.d`
enabled, minus those that would touch the host's kernel or network), runs sshd in the
foreground and reaps orphans like any init. SIGTERM stops the enabled services, then every
process left; when this process exits the kernel kills whatever remains in the namespace.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# rc2.d services a boot must not start here: sshd is ours, the rest would change the host.
NOT_AT_BOOT = {"ssh", "procps", "kmod", "udev", "hwclock.sh", "networking", "rsync", "cron"}
SERVICE_STOP_TIMEOUT = 90  # supervisor's stopwaitsecs for a final upload fits in it

stopping = False


def log(message: str) -> None:
    print(f"sandbox-init: {message}", flush=True)


def on_term(signum, frame) -> None:
    global stopping
    stopping = True


def boot_services() -> list[str]:
    links = sorted(Path("/etc/rc2.d").glob("S*"))
    return [link.name[3:] for link in links if link.name[3:] not in NOT_AT_BOOT]


def run_service(name: str, action: str, timeout: float) -> None:
    try:
        result = subprocess.run(
            ["/etc/init.d/" + name, action], stdin=subprocess.DEVNULL, timeout=timeout, check=False
        )
        log(f"{name} {action}: exit {result.returncode}")
    except (OSError, subprocess.TimeoutExpired) as error:
        log(f"{name} {action}: {error}")


def start_sshd() -> subprocess.Popen:
    return subprocess.Popen(["/usr/sbin/sshd", "-D", "-e"], stdin=subprocess.DEVNULL)


def reap(sshd: subprocess.Popen) -> subprocess.Popen:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return sshd
        if pid == 0:
            return sshd
        if pid == sshd.pid and not stopping:
            log("sshd exited; starting it again")
            time.sleep(1)
            sshd = start_sshd()


def shutdown() -> None:
    for name in reversed(boot_services()):
        run_service(name, "stop", SERVICE_STOP_TIMEOUT)
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(-1, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            time.sleep(0.1)


def main() -> int:
    ctypes.CDLL(None).prctl(15, b"init", 0, 0, 0)  # PR_SET_NAME: ansible's service_mgr fact
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    os.environ.update(PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    Path("/run/lock").mkdir(mode=0o1777, exist_ok=True)
    Path("/run/utmp").touch()
    subprocess.run(["ssh-keygen", "-A"], check=True, stdout=subprocess.DEVNULL)
    for name in boot_services():
        run_service(name, "start", 60)
    sshd = start_sshd()
    log(f"up (sshd pid {sshd.pid})")
    while not stopping:
        sshd = reap(sshd)
        time.sleep(0.2)
    log("stopping")
    shutdown()
    log("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
