"""Shared fixtures: real servers on loopback ports, started and stopped per test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.fakes import moto_iam as iam_moto
from tests.fakes.moto_iam import AccessKey

REPO = Path(__file__).resolve().parent.parent
# sandbox_world (session: a sandbox on free ports) and run_playbook: see tests/sandbox/fixture.py.
pytest_plugins = ["tests.sandbox.fixture"]
IN_CI = os.environ.get("CI") == "true"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def require(condition: bool, reason: str) -> None:
    """Skip when a prerequisite is missing, but fail under CI=true: CI never skips."""
    if not condition:
        if IN_CI:
            pytest.fail(f"prerequisite missing in CI: {reason}")
        pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which counts as a failure: {report.longrepr}"


class MotoServer:
    """A moto server process on a free loopback port: moto.server with what AWS does and moto
    5.2.5 does not (tests/fakes/moto_monitoring.py: bucket metrics configurations, CloudWatch's
    reserved AWS/ namespaces), or `module`."""

    def __init__(
        self, env: dict[str, str] | None = None, module: str = "tests.fakes.moto_monitoring"
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.env = env
        self.module = module

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, "-H", "127.0.0.1", "-p", str(self.port)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=None if self.env is None else {**os.environ, **self.env},
        )
        wait_for_http(f"{self.url}/moto-api/")

    def reset(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=10
        ).close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """A reset moto server and the AWS environment that points boto3 (and Ansible) at it."""
    moto_server.reset()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return moto_server


class IamMoto:
    """A moto server that checks each signature and the signer's IAM policies, as AWS does.

    moto (tests/fakes/moto_iam.py) evaluates the caller's identity policies on every request
    after the administrator's unauthenticated ones: Action and Resource are matched, but Condition
    blocks of identity policies are not evaluated (moto/iam/access_control.py passes them no
    request context), so a conditional Allow behaves like an unconditional one. HeadBucket is
    authorized as the non-AWS action s3:HeadBucket, HeadObject as s3:GetObject; CloudWatch calls
    as cloudwatch:* (tests/fakes/moto_iam_server.py). Refusals answer 403 AccessDenied (S3, IAM,
    CloudWatch) or UnauthorizedOperation (EC2).

    `reset()` empties moto and creates `admin` (an IAM user with Action "*") in the unauthenticated
    requests; everything after that must be signed by a key moto knows.
    """

    def __init__(self, server: MotoServer, region: str = "us-east-1") -> None:
        self.server = server
        self.url = server.url
        self.region = region
        self.admin: AccessKey | None = None

    def reset(self) -> AccessKey:
        """Empty moto, create the administrator user unauthenticated, then enforce IAM."""
        iam_moto.post(self.url, "/moto-api/reset")
        self.admin = iam_moto.create_administrator(self.url, self.region)
        return self.admin

    def create_user(self, name: str, policy: dict | str) -> AccessKey:
        """Create an IAM user with `policy` (a dict or JSON text) as its only, inline policy."""
        return iam_moto.create_user(self.client("iam"), name, policy)

    def client(self, service: str, key: AccessKey | None = None):
        """A boto3 client for `service` signing with `key` (default: the administrator)."""
        key = key or self.admin
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=key.access_key_id,
            aws_secret_access_key=key.secret_access_key,
        )

    def env(self, key: AccessKey | None = None) -> dict[str, str]:
        """Environment that points boto3 (Ansible, the collector) at this moto, signing as `key`."""
        key = key or self.admin
        return {
            "AWS_ACCESS_KEY_ID": key.access_key_id,
            "AWS_SECRET_ACCESS_KEY": key.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.url,
        }


def enforcing_moto_server() -> MotoServer:
    """A moto server (not started) that enforces IAM from its first request, see IamMoto."""
    return MotoServer(env=iam_moto.SERVER_ENV, module=iam_moto.SERVER_MODULE)


@pytest.fixture(scope="session")
def moto_iam_server() -> Iterator[MotoServer]:
    """A second moto server, separate from `moto_server`, that enforces IAM (see IamMoto)."""
    server = enforcing_moto_server()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def moto_iam(moto_iam_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> IamMoto:
    """An emptied, IAM-enforcing moto with an administrator user (`moto_iam.admin`).

    The process environment is left without AWS credentials, so nothing signs by accident;
    use `moto_iam.client(service, key)` or `moto_iam.env(key)`.
    """
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    world = IamMoto(moto_iam_server)
    world.reset()
    return world


@pytest.fixture
def s3(aws_env: MotoServer):
    return boto3.client("s3", endpoint_url=aws_env.url, region_name="us-east-1")


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 4 MiB tmpfs (root only): a real ENOSPC."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    require(done.returncode == 0, f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


# -- running in parallel (pytest-xdist; `make test`: -n 4 --dist loadfile --no-loadscope-reorder) -

# The tests that use the sandbox live in tests/e2e/: their tests form one unit of work, so one
# worker runs them all, in this order, on the one sandbox its session builds
# (tests/sandbox/fixture.py): the bare host's tests first, then the deploys.
E2E_DIR = Path(__file__).resolve().parent / "e2e"
SANDBOX_MODULES = ("test_sandbox.py", "test_deploy_e2e.py", "test_notebook_e2e.py")
SANDBOX_UNIT = "sandbox"


def uses_sandbox(item: pytest.Item) -> bool:
    return item.get_closest_marker("e2e") is not None or "sandbox_world" in item.fixturenames


def in_e2e(path: Path) -> bool:
    return E2E_DIR in path.resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Sandbox tests first (the longest unit of work starts first); none outside tests/e2e/."""
    strays = sorted(
        {item.path.name for item in items if uses_sandbox(item) and not in_e2e(item.path)}
    )
    if strays:
        raise pytest.UsageError(
            f"sandbox tests outside tests/e2e/: {', '.join(strays)}; move the module there"
            " (tests/conftest.py): all sandbox tests share one sandbox on one xdist worker"
        )
    for item in items:
        if in_e2e(item.path):
            item.add_marker(pytest.mark.e2e)
    order = {name: index for index, name in enumerate(SANDBOX_MODULES)}
    last = len(order)

    def rank(item: pytest.Item) -> int:
        return order.get(item.path.name, last) if in_e2e(item.path) else last + 1

    items.sort(key=rank)  # stable: order kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """--dist loadfile, with tests/e2e/ as one unit of work.

    A module's tests stay on one worker (its module-scoped fixtures, e.g. a provisioned
    footprint, are built once); each worker has its own session servers (moto, ...) on free
    ports. Not `--dist loadgroup`: with pytest 9.2 it no longer groups (pytest-xdist#1386).
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SandboxAsOneUnit(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return SANDBOX_UNIT if "/e2e/" in f"/{path}" else path

    return SandboxAsOneUnit(config, log)
