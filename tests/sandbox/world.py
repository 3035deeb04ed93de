"""The sandbox: moto, the X stand-in, git daemon, a files server and a Debian instance on loopback.

    world = Sandbox(state_dir, Ports(...)); world.up(); world.ssh("sudo true"); world.reboot()
    world.down()

The instance is the Debian root booted by systemd-nspawn with systemd as PID 1 (boot.py), on
this machine's network: its sshd listens on 127.0.0.1. `up` is idempotent: it reuses whatever
is still running and starts what is not. Every host process it starts is recorded (pid + start
time, so a recycled pid is never killed) in STATE/state.json; `down` stops exactly those (the
instance shuts down in order), kills whatever is left in the instance's cgroup and removes the
state directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tests.fakes import moto_iam
from tests.sandbox import boot, image, miniforge, paths

HOST = "127.0.0.1"
DEFAULT_X_TOKEN = "sandbox-token"  # the stand-in's token: not a secret (inventory/sandbox uses it)
NEEDED_TOOLS = (
    "debootstrap",
    "sshd",
    "systemd-nspawn",
    "unshare",
    "chroot",
    "mount",
    "ssh",
    "ssh-keygen",
    "git",
    "zstd",
)
# Seconds an orderly shutdown of the instance may take: supervisord's stopwaitsecs (90) for the
# collector's final upload, plus systemd's own stop jobs.
INSTANCE_STOP_TIMEOUT = 150


class SandboxError(Exception):
    """A problem the user can act on (one line)."""


@dataclasses.dataclass(frozen=True)
class Ports:
    moto: int
    x: int
    ssh: int
    git: int
    files: int
    git_ssh: int

    @classmethod
    def defaults(cls) -> Ports:
        values = yaml.safe_load(paths.SANDBOX_VARS.read_text())
        return cls(
            **{f.name: int(values[f"sandbox_{f.name}_port"]) for f in dataclasses.fields(cls)}
        )

    @classmethod
    def free(cls) -> Ports:
        sockets = [socket.socket() for _ in dataclasses.fields(cls)]
        try:
            for sock in sockets:
                sock.bind((HOST, 0))
            return cls(*(sock.getsockname()[1] for sock in sockets))
        finally:
            for sock in sockets:
                sock.close()


def preflight() -> None:
    """One clear message when this machine cannot host the sandbox."""
    problems = []
    if platform.system() != "Linux":
        problems.append(f"it runs on Linux only (this is {platform.system()})")
    elif os.geteuid() != 0:
        problems.append(
            "it must run as root (debootstrap and systemd-nspawn need it): sudo make demo"
        )
    missing = [tool for tool in NEEDED_TOOLS if shutil.which(tool) is None]
    if missing:
        problems.append(
            f"missing tools: {' '.join(missing)} (make debian-packages installs them;"
            " systemd-nspawn is in the Debian package systemd-container)"
        )
    if problems:
        raise SandboxError(
            "the sandbox (a Debian 12 host built with debootstrap, booted with systemd-nspawn, "
            "plus moto and an X stand-in on 127.0.0.1) cannot start: " + "; ".join(problems)
        )


def start_time(pid: int) -> int | None:
    """Kernel start time of pid (field 22 of /proc/PID/stat), None if it is gone (or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def shown_path(path: str | Path) -> str:
    """`path` relative to the current folder when under it (.sandbox/logs/files.log for make)."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _see_log(process: dict | None) -> str:
    if process is None or not process.get("log"):
        return "see its log"
    return f"see {shown_path(process['log'])}; make demo-down removes it"


def wait_until(check, what: str, timeout: float, process: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and start_time(process["pid"]) != process["start"]:
            raise SandboxError(f"{what}: the process exited ({_see_log(process)})")
        if time.monotonic() > deadline:
            raise SandboxError(f"{what}: not ready after {timeout:.0f}s ({_see_log(process)})")
        time.sleep(0.2)


def cgroup_pids(directory: Path) -> list[int]:
    """Pids in a cgroup and all of its descendants."""
    pids: list[int] = []
    for procs in directory.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in procs.read_text().split()]
    return pids


def http_ok(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except OSError:
        return False


class Sandbox:
    def __init__(
        self,
        state_dir: Path = paths.DEFAULT_STATE_DIR,
        ports: Ports | None = None,
        x_rate: float = 5.0,
        x_token: str = DEFAULT_X_TOKEN,
        log=None,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.ports = ports or Ports.defaults()
        self.x_rate = x_rate
        self.x_token = x_token
        self.log = log or (lambda message: print(f"sandbox: {message}", file=sys.stderr))
        self.root = self.state_dir / "root"
        self.logs = self.state_dir / "logs"
        self.ssh_key = self.state_dir / "ssh" / "id_ed25519"
        self.known_hosts = self.state_dir / "ssh" / "known_hosts"
        self.state_file = self.state_dir / "state.json"
        self.vars_file = self.state_dir / "vars.json"
        self.boots_file = self.state_dir / "boots"
        self.admin_key_file = self.state_dir / "aws-administrator.json"
        # The instance's own cgroup (boot.py), unique per state directory.
        digest = hashlib.sha256(bytes(self.state_dir)).hexdigest()
        self.cgroup = f"twittersnake-sandbox-{digest[:10]}"

    # ---- state ---------------------------------------------------------------------------

    def _load(self) -> dict:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {"processes": {}}

    def _save(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.rename(self.state_file)

    @staticmethod
    def _alive(process: dict | None) -> bool:
        return process is not None and start_time(process["pid"]) == process["start"]

    def _spawn(self, state: dict, name: str, command: list[str], **kwargs) -> dict:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        with open(log_path, "ab") as log_file:
            popen = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **kwargs,
            )
        process = {"pid": popen.pid, "start": start_time(popen.pid), "command": command}
        process["log"] = str(log_path)
        state["processes"][name] = process
        self._save(state)
        return process

    # ---- up ------------------------------------------------------------------------------

    def up(self) -> dict:
        """Start whatever is not running yet; returns the variables the playbooks need."""
        preflight()
        started = time.monotonic()
        state = self._load()
        other_ports = state.get("ports") and state["ports"] != dataclasses.asdict(self.ports)
        if other_ports and any(self._alive(p) for p in state["processes"].values()):
            raise SandboxError(
                f"a sandbox already runs in {self.state_dir} with ports {state['ports']}; "
                "stop it first (python -m tests.sandbox down) or use another --state-dir"
            )
        state["ports"] = dataclasses.asdict(self.ports)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        self._ensure_ssh_key()
        self._ensure_moto(state)
        self._ensure_x(state)
        self._ensure_git(state)
        self._ensure_git_ssh(state)
        sha256 = self._ensure_files(state)
        self._ensure_instance(state)
        variables = self.variables(sha256)
        self.vars_file.write_text(json.dumps(variables, indent=2) + "\n")
        self.log(f"up in {time.monotonic() - started:.1f}s; variables in {self.vars_file}")
        return variables

    def _check_port_free(self, name: str, port: int) -> None:
        """Refuse a taken port naming the variable to change (name: a Ports field)."""
        if port_open(port):
            option = "--" + name.replace("_", "-") + "-port"
            raise SandboxError(
                f"port {port} on {HOST} (sandbox_{name}_port) is taken by another program, "
                "perhaps another checkout's make demo; set a free port as sandbox_"
                f"{name}_port in {paths.SANDBOX_VARS.relative_to(paths.REPO)} (make demo reads it) "
                f"or pass {option} to python -m tests.sandbox up"
            )

    def _reuse(self, state: dict, name: str) -> bool:
        process = state["processes"].get(name)
        if self._alive(process):
            return True
        state["processes"].pop(name, None)
        port_name = name if name != "instance" else "ssh"
        self._check_port_free(port_name, getattr(self.ports, port_name))
        return False

    def _ensure_ssh_key(self) -> None:
        if self.ssh_key.exists():
            return
        self.ssh_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "twittersnake-sandbox"]
            + ["-f", str(self.ssh_key)],
            check=True,
        )

    def _ensure_moto(self, state: dict) -> None:
        """moto enforcing IAM as AWS does; its administrator is made in the first (unsigned)
        requests and its key kept in STATE/aws-administrator.json for the playbooks (vars.json)."""
        url = f"http://{HOST}:{self.ports.moto}"
        running = self._reuse(state, "moto")
        if running and self.admin_key_file.exists():
            return
        if not running:
            self.log(f"starting moto (enforcing IAM) on {HOST}:{self.ports.moto}")
            command = moto_iam.server_command(HOST, self.ports.moto)
            env = {**os.environ, **moto_iam.SERVER_ENV}
            process = self._spawn(state, "moto", command, cwd=paths.REPO, env=env)
            wait_until(lambda: http_ok(f"{url}/moto-api/"), "moto", 60, process)
        admin = moto_iam.create_administrator(url)
        fd = os.open(self.admin_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(dataclasses.asdict(admin), out)

    def admin_key(self) -> moto_iam.AccessKey:
        """The sandbox moto's administrator (Action "*"): what the playbooks sign with."""
        return moto_iam.AccessKey(**json.loads(self.admin_key_file.read_text()))

    def aws_client(self, service: str):
        """A boto3 client for the sandbox's moto, signing as its administrator."""
        import boto3

        key = self.admin_key()
        return boto3.client(
            service,
            endpoint_url=f"http://{HOST}:{self.ports.moto}",
            region_name="us-east-1",
            aws_access_key_id=key.access_key_id,
            aws_secret_access_key=key.secret_access_key,
        )

    def _ensure_x(self, state: dict) -> None:
        token_file = self.state_dir / "x_token"
        if not token_file.exists():
            token_file.touch(mode=0o600)
            token_file.write_text(self.x_token + "\n")
        if not self._reuse(state, "x"):
            self.log(f"starting the X stand-in on {HOST}:{self.ports.x} ({self.x_rate:g} posts/s)")
            command = [sys.executable, "-m", "tests.fakes.x_server", "--host", HOST]
            command += ["--port", str(self.ports.x), "--token-file", str(token_file)]
            command += ["--rate", f"{self.x_rate:g}"]
            process = self._spawn(state, "x", command, cwd=paths.REPO)
            url = f"http://{HOST}:{self.ports.x}/_fake/stats"
            wait_until(lambda: http_ok(url), "X stand-in", 30, process)

    def _ensure_git(self, state: dict) -> None:
        """git daemon exporting this checkout's repository as /twittersnake.git (always current)."""
        export = self.state_dir / "git"
        export.mkdir(exist_ok=True)
        link = export / "twittersnake.git"
        git_dir = Path(
            subprocess.run(
                ["git", "-C", str(paths.REPO), "rev-parse", "--absolute-git-dir"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        if not link.is_symlink() or link.resolve() != git_dir:
            link.unlink(missing_ok=True)
            link.symlink_to(git_dir)
        if not self._reuse(state, "git"):
            self.log(f"starting git daemon on {HOST}:{self.ports.git}")
            command = [
                "git",
                "daemon",
                "--reuseaddr",
                f"--listen={HOST}",
                f"--port={self.ports.git}",
            ]
            command += [
                f"--base-path={export}",
                "--export-all",
                "--informative-errors",
                str(export),
            ]
            process = self._spawn(state, "git", command)
            wait_until(lambda: port_open(self.ports.git), "git daemon", 20, process)

    def _ensure_git_ssh(self, state: dict) -> None:
        """The same repository over SSH, as a private one: only the deploy key may read it.

        This machine's sshd on loopback with a config of its own: its own host key, no password,
        one authorized key (the deploy key) whose forced command serves this repository read-only
        (`git-upload-pack`), nothing else (`restrict`: no shell, pty or forwarding).
        """
        directory = self.state_dir / "git-ssh"
        directory.mkdir(mode=0o700, exist_ok=True)
        for name, comment in (("host_key", "sandbox-git-host"), ("deploy_key", "deploy-key")):
            if not (directory / name).exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment]
                    + ["-f", str(directory / name)],
                    check=True,
                )
        repository = self.state_dir / "git" / "twittersnake.git"
        deploy_public = (directory / "deploy_key.pub").read_text().strip()
        (directory / "authorized_keys").write_text(
            f"restrict,command=\"git-upload-pack '{repository}'\" {deploy_public}\n"
        )
        host_public = (directory / "host_key.pub").read_text().split()
        (directory / "known_hosts").write_text(
            f"[{HOST}]:{self.ports.git_ssh} {host_public[0]} {host_public[1]}\n"
        )
        config = directory / "sshd_config"
        config.write_text(
            f"Port {self.ports.git_ssh}\nListenAddress {HOST}\n"
            f"HostKey {directory / 'host_key'}\nPidFile none\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
            "AuthenticationMethods publickey\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin forced-commands-only\n"
            "AllowUsers root\nUsePAM no\nStrictModes no\nPermitUserEnvironment no\n"
        )
        if not self._reuse(state, "git_ssh"):
            self.log(f"starting the git-over-SSH server on {HOST}:{self.ports.git_ssh}")
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation
            command = [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config)]
            process = self._spawn(state, "git_ssh", command)
            wait_until(lambda: port_open(self.ports.git_ssh), "git-over-SSH server", 20, process)

    def repository_over_ssh(self) -> dict:
        """What the collector role needs to clone the sandbox's private repository."""
        directory = self.state_dir / "git-ssh"
        return {
            "twittersnake_repo_url": f"ssh://root@{HOST}:{self.ports.git_ssh}/twittersnake.git",
            "twittersnake_repo_deploy_key": (directory / "deploy_key").read_text(),
            "twittersnake_repo_host_key": (directory / "known_hosts").read_text().strip(),
        }

    def _ensure_files(self, state: dict) -> str:
        files = self.state_dir / "files"
        sha256 = miniforge.write_files(files, self.log)
        if not self._reuse(state, "files"):
            self.log(f"starting the files server on {HOST}:{self.ports.files}")
            command = [
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                HOST,
                "--directory",
                str(files),
            ]
            process = self._spawn(state, "files", [*command, str(self.ports.files)])
            url = f"http://{HOST}:{self.ports.files}/{miniforge.INSTALLER_NAME}.sha256"
            wait_until(lambda: http_ok(url), "files server", 20, process)
        return sha256

    def _ensure_instance(self, state: dict) -> None:
        if self._reuse(state, "instance"):
            self._pin_host_keys()
            return
        image.extract(self.root, self.log)
        image.personalise(
            self.root,
            ssh_port=self.ports.ssh,
            public_key=self.ssh_key.with_suffix(".pub").read_text(),
            hostname="twittersnake-sandbox",
            package_index=f"http://{HOST}:{self.ports.files}/simple/",
        )
        self._pin_host_keys()
        self.boots_file.unlink(missing_ok=True)
        self.log(f"booting the instance (systemd-nspawn; sshd on {HOST}:{self.ports.ssh})")
        # Where boot.py puts itself: recorded so that `down` finds the cgroup from any process.
        state["cgroups"] = [str(d) for d in boot.cgroup_dirs(self.cgroup)]
        process = self._spawn(state, "instance", self._instance_command(), cwd=paths.REPO)
        self._wait_for_login(process, boots=1)

    def _pin_host_keys(self) -> None:
        """known_hosts with the host keys made on this machine for the instance (image.personalise),
        as provisioning pins the key it gives an AWS instance: the deploy checks them strictly."""
        lines = [
            f"[{HOST}]:{self.ports.ssh} {' '.join(key.read_text().split()[:2])}\n"
            for key in sorted((self.root / "etc/ssh").glob("ssh_host_*_key.pub"))
        ]
        self.known_hosts.parent.mkdir(mode=0o700, exist_ok=True)
        self.known_hosts.write_text("".join(lines))

    def _instance_command(self) -> list[str]:
        """boot.py in a mount namespace of its own (for its tmpfs); the host's network."""
        return [
            "unshare",
            "--mount",
            "--propagation=private",
            "--",
            sys.executable,
            "-m",
            "tests.sandbox.boot",
            str(self.root),
            "--cgroup",
            self.cgroup,
            "--machine",
            "twittersnake-sandbox",
            "--boots-file",
            str(self.boots_file),
        ]

    def boots(self) -> int:
        """How many times the instance has booted since `up` (1 before any reboot)."""
        try:
            return int(self.boots_file.read_text())
        except (OSError, ValueError):
            return 0

    def _wait_for_login(self, process: dict, boots: int, timeout: float = 120) -> None:
        """Until boot number `boots` has started and sshd there lets ubuntu in."""
        wait_until(lambda: self.boots() >= boots, "instance boot", timeout, process)
        wait_until(lambda: port_open(self.ports.ssh), "instance sshd", timeout, process)
        wait_until(
            lambda: self.ssh("true", check=False, timeout=15).returncode == 0,
            "ssh login",
            timeout,
            process,
        )

    def reboot(self, timeout: float = 240) -> float:
        """`systemctl reboot` on the instance; returns the seconds until sshd answered again.

        The instance's systemd stops every service (supervisord stops the collector: SIGTERM,
        final upload), systemd-nspawn exits with 133 and boot.py boots the root again.
        """
        process = self._load()["processes"].get("instance")
        if not self._alive(process):
            raise SandboxError("the instance is not running (python -m tests.sandbox up)")
        before = self.boots()
        started = time.monotonic()
        self.log("rebooting the instance (systemctl reboot)")
        # ssh may end with 255 when the connection drops as sshd stops: that is the reboot.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.ssh("sudo -n systemctl reboot", check=False, timeout=30)
        self._wait_for_login(process, boots=before + 1, timeout=timeout)
        elapsed = time.monotonic() - started
        self.log(f"the instance is back after {elapsed:.1f}s (boot {self.boots()})")
        return elapsed

    # ---- use -----------------------------------------------------------------------------

    def variables(self, miniforge_sha256: str | None = None) -> dict:
        """Extra vars for ansible-playbook -i inventory/sandbox (written to STATE/vars.json)."""
        if miniforge_sha256 is None:
            sha_file = self.state_dir / "files" / f"{miniforge.INSTALLER_NAME}.sha256"
            miniforge_sha256 = sha_file.read_text().strip()
        variables = {f"sandbox_{k}_port": v for k, v in dataclasses.asdict(self.ports).items()}
        variables.update(
            sandbox_state_dir=str(self.state_dir),
            sandbox_x_rate=self.x_rate,
            sandbox_miniforge_sha256=miniforge_sha256,
            # The repository as a private one: over SSH, with a deploy key and a pinned host key.
            **self.repository_over_ssh(),
            # Provisioning's sandbox paths, pointed at this sandbox's state directory.
            keypair_public_key_file=str(self.ssh_key.with_suffix(".pub")),
            twittersnake_credentials_file=str(self.state_dir / "collector-credentials.yml"),
            twittersnake_notebook_credentials_file=str(self.state_dir / "notebook-credentials.yml"),
            vault_x_bearer_token=self.x_token,
            # moto enforces IAM: provisioning signs as its administrator, the collector with the
            # key roles/iam creates for it (twittersnake_credentials_file).
            aws_access_key=self.admin_key().access_key_id,
            aws_secret_key=self.admin_key().secret_access_key,
            instance_connect_user="ubuntu",
            # The commit checked out here, not a branch name: a detached CI checkout has no `main`,
            # and a commit made while tests run must not change what they deploy.
            twittersnake_version=subprocess.run(
                ["git", "-C", str(paths.REPO), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip(),
        )
        return variables

    def ssh_command(self, command: str, user: str = "ubuntu") -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.ssh_key),
            "-p",
            str(self.ports.ssh),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
            f"{user}@{HOST}",
            command,
        ]

    def ssh(
        self, command: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        """Run a shell command on the instance as ubuntu (prefix with sudo for root)."""
        return subprocess.run(
            self.ssh_command(command),
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def status(self) -> dict:
        state = self._load()
        return {
            "state_dir": str(self.state_dir),
            "ports": state.get("ports"),
            "processes": {
                name: {"pid": p["pid"], "running": self._alive(p)}
                for name, p in state["processes"].items()
            },
        }

    def running(self) -> bool:
        processes = self._load()["processes"]
        names = ("moto", "x", "git", "git_ssh", "files", "instance")
        return all(self._alive(processes.get(name)) for name in names)

    # ---- down ----------------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything `up` started, check nothing is left, remove the state directory."""
        state = self._load()
        instance = state["processes"].get("instance")
        if self._alive(instance):
            self._stop_instance(instance)
        for name, process in state["processes"].items():
            if name != "instance" and self._alive(process):
                self._stop_group(name, process)
        self._kill_strays(state)
        self._unmount_leftovers()
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
        self.log(f"down: {self.state_dir} removed")

    def _stop_instance(self, instance: dict) -> None:
        """SIGTERM to boot.py: systemd-nspawn has the instance's systemd shut down in order."""
        self.log("shutting the instance down")
        os.kill(instance["pid"], signal.SIGTERM)
        deadline = time.monotonic() + INSTANCE_STOP_TIMEOUT
        while self._alive(instance) and time.monotonic() < deadline:
            time.sleep(0.2)
        if self._alive(instance):
            self.log("the instance did not shut down in time: killing it")
            os.kill(instance["pid"], signal.SIGKILL)  # systemd-nspawn dies with it (PDEATHSIG)
        self._reap(instance["pid"])

    def _stop_group(self, name: str, process: dict) -> None:
        """Our servers run in their own sessions: TERM the group (git daemon forks), then KILL."""
        pid = process["pid"]
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while self._alive(process) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not self._alive(process):
                break
        self._reap(pid)

    @staticmethod
    def _reap(pid: int) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)

    def _kill_strays(self, state: dict) -> None:
        """Every process left in the instance's cgroups (none after an orderly shutdown), then
        the cgroups themselves."""
        for directory in map(Path, state.get("cgroups", [])):
            if not directory.is_dir():
                continue
            for _ in range(50):
                pids = cgroup_pids(directory)
                if not pids:
                    break
                self.log(f"killing {len(pids)} leftover process(es) of the instance")
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
            for sub in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                directory.rmdir()

    def mounts(self) -> list[str]:
        """Mount points under the state directory seen by the host (the instance's are private)."""
        prefix = str(self.state_dir) + "/"
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == str(self.state_dir):
                points.append(point)
        return points

    def _unmount_leftovers(self) -> None:
        for point in sorted(self.mounts(), key=len, reverse=True):
            subprocess.run(["umount", "--lazy", point], check=False)
        left = self.mounts()
        if left:
            raise SandboxError(f"cannot unmount {left}; not removing {self.state_dir}")
