"""A moto server that enforces IAM, and its administrator: shared by tests/conftest.py (moto_iam)
and the sandbox (tests/sandbox/world.py).

moto authorizes nothing for the first INITIAL_NO_AUTH_ACTION_COUNT requests after a
POST /moto-api/reset-auth (moto/core/authorization.py, moto 5.2.5), then checks every request's
SigV4 signature and evaluates the signer's identity policies, as AWS does. create_administrator()
spends exactly those unauthenticated requests on an IAM user with Action "*".
"""

from __future__ import annotations

import json
import sys
import urllib.request
from dataclasses import dataclass

import boto3

# `python -m tests.fakes.moto_iam_server` = moto.server with AWS's IAM prefix for CloudWatch.
SERVER_MODULE = "tests.fakes.moto_iam_server"
# Enforce from the very first request; create_administrator() opens the unauthenticated window.
SERVER_ENV = {"INITIAL_NO_AUTH_ACTION_COUNT": "0"}
ADMINISTRATOR = "administrator"
ADMINISTRATOR_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
}
# CreateUser, PutUserPolicy, CreateAccessKey: the requests moto lets through unsigned.
UNAUTHENTICATED_REQUESTS = 3


@dataclass(frozen=True)
class AccessKey:
    """An IAM user's access key as moto's CreateAccessKey returned it."""

    user_name: str
    access_key_id: str
    secret_access_key: str


def server_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", SERVER_MODULE, "-H", host, "-p", str(port)]


def post(url: str, path: str, body: bytes = b"") -> None:
    # A form content type (urllib's default) would leave moto's request.data empty.
    request = urllib.request.Request(
        f"{url}{path}", data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10).close()


def create_user(iam, name: str, policy: dict | str) -> AccessKey:
    """Create an IAM user whose only policy is `policy` (inline) and one access key for it."""
    iam.create_user(UserName=name)
    iam.put_user_policy(
        UserName=name,
        PolicyName=f"{name}-inline",
        PolicyDocument=policy if isinstance(policy, str) else json.dumps(policy),
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return AccessKey(name, key["AccessKeyId"], key["SecretAccessKey"])


def create_administrator(url: str, region: str = "us-east-1") -> AccessKey:
    """In moto's next unauthenticated requests: user `administrator` (Action "*") and its key."""
    post(url, "/moto-api/reset-auth", str(UNAUTHENTICATED_REQUESTS).encode())
    anonymous = boto3.client(
        "iam",
        endpoint_url=url,
        region_name=region,
        aws_access_key_id="unauthenticated",
        aws_secret_access_key="unauthenticated",
    )
    return create_user(anonymous, ADMINISTRATOR, ADMINISTRATOR_POLICY)
