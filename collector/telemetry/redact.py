"""Secret scrubbing in one place: every log line (the CLI's formatter) and every message the
collector writes itself (status.json's last_error, exceptions turned into one line).

Secrets are the X bearer token and the AWS credentials: the values found in the environment,
in the token file, and whatever boto3 resolved for the S3 client. AWS access key ids are also
removed by their shape (AKIA/ASIA + 16 characters, see AWS IAM "Understanding unique ID
prefixes"), so a key id from an instance profile or a profile file never shows either.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading

REDACTED = "[REDACTED]"
ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# Discovered credentials shorter than this ("testing" in a test) would scrub ordinary words;
# real AWS key ids are 20 characters, secret keys 40.
DISCOVERED_MIN = 12


class Redactor:
    """A set of secret strings replaced by [REDACTED] in any text; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    def add(self, secret: str | None, min_length: int = 4) -> None:
        """Remember `secret` (ignored when shorter than `min_length` characters)."""
        if not secret or len(secret) < min_length:
            return
        with self._lock:
            if secret not in self._secrets:
                # longest first, so a secret containing another is replaced whole
                self._secrets = tuple(sorted({*self._secrets, secret}, key=len, reverse=True))

    def add_aws_credentials(self, client=None) -> None:
        """The AWS credentials in the environment and, when given, those a boto3 client resolved."""
        values = [os.environ.get(name) for name in AWS_ENV]
        # credentials may be missing or resolve lazily: the env values and the key-id shape remain
        with contextlib.suppress(Exception):
            frozen = client._request_signer._credentials.get_frozen_credentials()
            values += [frozen.access_key, frozen.secret_key, frozen.token]
        for value in values:
            self.add(value, DISCOVERED_MIN)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return ACCESS_KEY_ID.sub(REDACTED, text)

    def one_line(self, exc: BaseException, limit: int = 400) -> str:
        """`Type: message` of an exception, scrubbed, on one line of at most `limit` characters."""
        return " ".join(self.scrub(f"{type(exc).__name__}: {exc}").split())[:limit]


# The process's one redactor: the CLI adds the token and env secrets, the S3 sink its credentials.
SECRETS = Redactor()
