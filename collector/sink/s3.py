"""The S3 sink: one ready file -> one object s3://{bucket}/{object_key}, confirmed by checksum.

A ready file counts as delivered only after S3 confirmed the object with a checksum: boto3
computes the SHA-256 of the body it sends (ChecksumAlgorithm="SHA256", which S3 validates
against the bytes it received) and the checksum S3 reports back must equal the one the
compressor recorded when it wrote the file (AWS S3 User Guide, "Checking object integrity").

No second object for one file: keys are deterministic (the file name) and every PUT carries
If-None-Match: * (S3 User Guide, "Add preconditions to S3 operations with conditional
requests"). A 412 means the object exists (e.g. our earlier PUT succeeded but the answer was
lost); a HEAD with ChecksumMode=ENABLED then decides: same checksum and size -> delivered,
anything else -> ChecksumConflict (the file is kept and the object never overwritten).

Files are bounded by rotate.max_bytes (64 MiB uncompressed by default), so a single PUT
(limit 5 GB) carries each file, streamed from the open file (bounded memory) with a
full-object checksum; no multipart upload, no composite checksums.

S3 API calls: ListObjectsV2 with Prefix={prefix}/ and MaxKeys=1 (check_bucket), PutObject
(with If-None-Match and a SHA-256 checksum), HeadObject (after a 412 or when the PUT answer
carries no checksum). IAM (roles/iam/templates/collector-policy.json.j2): s3:ListBucket on the
bucket with s3:prefix {prefix}/*, s3:PutObject only with If-None-Match (s3:if-none-match) and
s3:GetObject (HeadObject) on {prefix}/*; kms:GenerateDataKey when the bucket uses SSE-KMS.
"""

from __future__ import annotations

import configparser
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from collector.errors import (
    BucketMissing,
    ChecksumConflict,
    Fatal,
    S3AccessDenied,
    S3Unavailable,
)
from collector.sink.codecs import codec_of
from collector.spool.compress import recorded_sha256
from collector.spool.layout import object_key, prefix_path
from collector.telemetry.redact import SECRETS

log = logging.getLogger(__name__)

# What a PUT can raise that means "S3 cannot be asked now": retried by the stage runner.
S3_ERRORS: tuple[type[BaseException], ...] = (BotoCoreError, ClientError, OSError)


@dataclass(frozen=True)
class PutOutcome:
    """How one delivery attempt of one file ended.

    result: "created" (new object), "existed" (S3 already held the same bytes: a 412 or an
    answer without checksum, confirmed by HEAD), "conflict" (different bytes: file kept),
    "error" (S3 could not be asked or refused: retried).
    error_code: S3's Error.Code ("AccessDenied", "SlowDown", "NoSuchBucket", ...) for a
    refusal, the exception's type name for a network failure, None otherwise.
    """

    key: str
    result: str
    size: int = 0
    error_code: str | None = None
    http_status: int | None = None
    problem: str | None = None  # named_problem's line when S3's answer has one


def aws_session(cfg) -> boto3.session.Session:
    """A boto3 session with the key of s3.credentials_file when set (its [default] profile, so
    `sudo collector check` uses the collector's key, not the caller's environment), else
    boto3's standard credential chain. Raises Fatal naming the file when it cannot be read."""
    path = getattr(cfg.s3, "credentials_file", "")
    if not path:
        return boto3.session.Session()
    return credentials_file_session(path)


def credentials_file_session(path: str) -> boto3.session.Session:
    """A boto3 session with the [default] key of the AWS shared-credentials file `path`
    (aws_session; `collector compliance`, `purge`, `report` and `export` use it too). Raises
    Fatal naming the file when it cannot be read."""
    parser = configparser.ConfigParser()
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_file(handle)
        section = parser["default"]
        keys = {
            "aws_access_key_id": section["aws_access_key_id"],
            "aws_secret_access_key": section["aws_secret_access_key"],
        }
    except PermissionError:
        raise Fatal(
            f"s3.credentials_file {path}: permission denied (it is the service user's; run as "
            "root, e.g. with sudo, or as that user)"
        ) from None
    except FileNotFoundError:
        raise Fatal(f"s3.credentials_file {path}: not found") from None
    except (OSError, configparser.Error, KeyError, UnicodeDecodeError) as exc:
        raise Fatal(
            f"s3.credentials_file {path}: not an AWS credentials file with [default] "
            f"aws_access_key_id and aws_secret_access_key ({type(exc).__name__})"
        ) from None
    token = section.get("aws_session_token")
    return boto3.session.Session(**keys, aws_session_token=token)


class UploadObserver(Protocol):
    """Told the outcome of every PUT, in the uploading thread, after S3 answered: a health
    state that tracks S3's error codes, the event log of refusals and recoveries. It must
    return quickly and not raise (an exception would count as the upload's failure)."""

    def __call__(self, outcome: PutOutcome) -> None: ...


def make_client(cfg):
    """An S3 client from aws_session(cfg); AWS_ENDPOINT_URL is honoured."""
    config = BotoConfig(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        tcp_keepalive=True,
    )
    return aws_session(cfg).client(
        "s3",
        region_name=cfg.s3.region or None,
        endpoint_url=cfg.s3.endpoint_url or None,
        config=config,
    )


def _error_fields(exc: BaseException) -> tuple[str | None, int | None]:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return exc.response.get("Error", {}).get("Code"), status
    return type(exc).__name__, None


def _clock_words(seconds: float) -> str:
    minutes, secs = divmod(int(abs(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{hours} h"] * bool(hours) + [f"{minutes} min"] * bool(minutes) + [f"{secs} s"]
    return " ".join(parts if hours or minutes else [f"{secs} s"])


def named_problem(exc: BaseException, cfg=None) -> str | None:
    """S3's answers that mean something other than their HTTP status, named for what they are
    (one line, from S3's own answer), or None for any other error.

    RequestTimeTooSkewed (403): this machine's clock is off; the skew is S3's ServerTime minus
    the RequestTime it echoes. PermanentRedirect (301): the bucket lives in another region, the
    one S3 names in x-amz-bucket-region. AWS S3 API Reference, "Error responses":
    https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html
    """
    if not isinstance(exc, ClientError):
        return None
    error = exc.response.get("Error", {})
    code = error.get("Code")
    if code == "RequestTimeTooSkewed":
        try:
            signed = datetime.strptime(error["RequestTime"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
            server = datetime.fromisoformat(error["ServerTime"].replace("Z", "+00:00"))
        except (KeyError, ValueError):
            return "RequestTimeTooSkewed: this machine's clock is off by more than S3 accepts"
        skew = (server - signed).total_seconds()
        allowed = int(error.get("MaxAllowedSkewMilliseconds") or 900000) // 60000
        return (
            f"RequestTimeTooSkewed: this machine's clock is {_clock_words(skew)} "
            f"{'behind' if skew > 0 else 'ahead of'} S3's (request signed at "
            f"{signed:%Y-%m-%dT%H:%M:%SZ}, S3's time {server:%Y-%m-%dT%H:%M:%SZ}; S3 accepts "
            f"{allowed} min): set the clock (timedatectl; chrony or systemd-timesyncd)"
        )
    if code == "PermanentRedirect":
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = headers.get("x-amz-bucket-region")
        bucket = error.get("Bucket") or (cfg.s3.bucket if cfg else "")
        if not region:
            return f"PermanentRedirect: bucket '{bucket}' is in another region than s3.region"
        ours = f"s3.region {cfg.s3.region!r}" if cfg else "the configured region"
        endpoint = (
            f" and s3.endpoint_url (now {cfg.s3.endpoint_url}) to that region's endpoint or empty"
            if cfg and cfg.s3.endpoint_url
            else ""
        )
        return (
            f"PermanentRedirect: bucket '{bucket}' is in region {region} (S3's "
            f"x-amz-bucket-region), not {ours}: set s3.region to {region}{endpoint}"
        )
    return None


def problem_line(exc: BaseException, cfg=None) -> str:
    """named_problem, else `Type: message` on one line (scrubbed)."""
    return named_problem(exc, cfg) or SECRETS.one_line(exc)


class S3Sink:
    """Delivers ready files to one bucket and prefix; thread-safe (boto3 clients are)."""

    def __init__(self, cfg, s3_client=None, observers: Sequence[UploadObserver] = ()) -> None:
        self.cfg = cfg
        self.bucket = cfg.s3.bucket
        self.prefix = cfg.s3.prefix
        self.s3 = s3_client if s3_client is not None else make_client(cfg)
        SECRETS.add_aws_credentials(self.s3)
        self.observers: tuple[UploadObserver, ...] = tuple(observers)

    def where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def key_for(self, path: Path) -> str:
        return object_key(self.prefix, path.name)

    # -- bucket check at start --------------------------------------------------------------

    def list_prefix(self) -> str:
        """`{prefix}/` ("" at the bucket's root): what every key and listing starts with."""
        return prefix_path(self.prefix)

    def check_bucket(self) -> None:
        """Raise BucketMissing (fatal), S3AccessDenied or S3Unavailable (both retried).

        One ListObjectsV2 with our prefix and MaxKeys=1: the call the collector's policy allows
        (s3:ListBucket only with s3:prefix under ours; HeadBucket would need it unconditioned).
        AWS: https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html
        """
        if not self.bucket:
            raise BucketMissing("s3.bucket is empty: name the bucket the collector writes to")
        try:
            self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.list_prefix(), MaxKeys=1)
        except ClientError as exc:
            code, status = _error_fields(exc)
            named = named_problem(exc, self.cfg)
            if named:
                raise S3Unavailable(f"S3 bucket '{self.bucket}': {named}") from None
            if code == "NoSuchBucket" or (status == 404 and code in ("404", "NotFound")):
                raise BucketMissing(
                    f"S3 bucket '{self.bucket}' does not exist (s3.bucket in the config)"
                ) from None
            if status == 403:
                raise S3AccessDenied(
                    f"S3 bucket '{self.bucket}': access denied ({code}) to ListObjectsV2 under "
                    f"'{self.list_prefix()}' (the collector's credentials need s3:ListBucket "
                    f"with s3:prefix '{self.list_prefix()}*')"
                ) from None
            raise S3Unavailable(f"S3 bucket '{self.bucket}': {SECRETS.one_line(exc)}") from None
        except (BotoCoreError, OSError) as exc:
            raise S3Unavailable(f"S3 bucket '{self.bucket}': {SECRETS.one_line(exc)}") from None

    # -- delivery ---------------------------------------------------------------------------

    def deliver(self, path: Path) -> PutOutcome:
        """PUT `path` once, conditionally, and confirm its checksum.

        Returns the outcome ("created" or "existed"); raises ChecksumConflict, or one of
        S3_ERRORS when S3 could not be asked. Every outcome is also passed to report().
        """
        return self._deliver(
            path.name, path.stat().st_size, recorded_sha256(path), lambda: open(path, "rb")
        )

    def deliver_as(self, path: Path, name: str, sha256: str) -> PutOutcome:
        """As deliver(), for the bytes of `path` under the key of the ready file `name`."""
        return self._deliver(name, path.stat().st_size, sha256, lambda: open(path, "rb"))

    def deliver_bytes(self, name: str, data: bytes, sha256: str) -> PutOutcome:
        """As deliver(), for a ready file that exists only in memory (`name` as in ready/):
        the same key, checksum and conditions, so it can never duplicate the file's object."""
        return self._deliver(name, len(data), sha256, lambda: contextlib.nullcontext(data))

    def _deliver(self, name: str, size: int, expected: str, body) -> PutOutcome:
        key = self.key_for(Path(name))
        try:
            created = self._put_confirmed(name, body, key, size, expected)
        except ChecksumConflict:
            self.report(PutOutcome(key, "conflict", size))
            raise
        except Exception as exc:
            code, status = _error_fields(exc)
            problem = named_problem(exc, self.cfg)
            self.report(PutOutcome(key, "error", size, code, status, problem))
            raise
        outcome = PutOutcome(key, "created" if created else "existed", size)
        self.report(outcome)
        return outcome

    def report(self, outcome: PutOutcome) -> None:
        """The one place every PUT outcome passes through."""
        for observer in self.observers:
            observer(outcome)

    def _put_confirmed(self, name: str, body, key: str, size: int, expected: str) -> bool:
        """True when our PUT created the object, False when S3 already held the same bytes.

        `body()` opens what to send (a file, or bytes in memory), as a context manager.
        """
        try:
            with body() as payload:
                answer = self.s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=payload,
                    ContentType=codec_of(name).content_type,
                    ChecksumAlgorithm="SHA256",
                    IfNoneMatch="*",
                )
        except ClientError as exc:
            code, status = _error_fields(exc)
            if status == 412 or code == "PreconditionFailed":
                self._confirm_existing(name, key, expected, size)
                return False
            raise
        reported = answer.get("ChecksumSHA256")
        if reported is None:  # nothing to compare in the answer: ask for the object's checksum
            self._confirm_existing(name, key, expected, size)
        elif reported != expected:
            raise ChecksumConflict(
                f"{self.where(key)}: S3 reports SHA-256 {reported}, the compressor wrote "
                f"{expected}; keeping {name} in the spool (the object is not overwritten)"
            )
        return True

    def _confirm_existing(self, name: str, key: str, expected: str, size: int) -> None:
        head = self.s3.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        reported = head.get("ChecksumSHA256")
        if reported == expected and head.get("ContentLength") == size:
            log.info("%s already holds %s (same SHA-256): done", self.where(key), name)
            return
        raise ChecksumConflict(
            f"CONFLICT {self.where(key)} already exists with different content "
            f"(SHA-256 {reported}, {head.get('ContentLength')} bytes; "
            f"ours {expected}, {size} bytes); "
            f"keeping {name} in the spool, never overwriting"
        )
