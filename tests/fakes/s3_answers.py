"""S3's own answers that moto does not give, for a RecordingProxy in front of moto (`answer`).

    proxy.answer = clock_ahead(3600)          # S3's clock one hour ahead of this machine's
    proxy.answer = bucket_in_region("eu-west-1")

Each inspects the request as S3 does and answers as S3 does, or returns None (relayed to moto):
  - RequestTimeTooSkewed: 403 when the request's X-Amz-Date is more than 15 minutes from S3's
    time, with RequestTime (as signed), ServerTime and MaxAllowedSkewMilliseconds in the body
    (AWS S3 API Reference, "Error responses": RequestTimeTooSkewed).
  - PermanentRedirect: 301 for every request about a bucket of another region sent to this
    endpoint (an endpoint_url of another region: botocore's redirect re-signs for the bucket's
    region but still asks this endpoint), with the bucket's region in the `x-amz-bucket-region`
    header and Endpoint and Bucket in the body (AWS S3 API Reference, "Error responses").
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

MAX_SKEW = timedelta(minutes=15)


def _error(status: int, code: str, message: str, extra: str, headers: dict | None = None):
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{extra}"
        "<RequestId>4442587FB7D0A2F9</RequestId>"
        "<HostId>fake+host+id/0123456789=</HostId></Error>"
    ).encode()
    return status, {"Content-Type": "application/xml", **(headers or {})}, body


def clock_ahead(seconds: float):
    """S3 whose clock runs `seconds` ahead of this machine's (negative: behind)."""

    def answer(handler):
        signed = handler.headers.get("X-Amz-Date")
        if not signed:
            return None
        request_time = datetime.strptime(signed, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        server_time = datetime.now(UTC) + timedelta(seconds=seconds)
        if abs(server_time - request_time) <= MAX_SKEW:
            return None
        return _error(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
            f"<RequestTime>{signed}</RequestTime>"
            f"<ServerTime>{server_time:%Y-%m-%dT%H:%M:%SZ}</ServerTime>"
            f"<MaxAllowedSkewMilliseconds>{int(MAX_SKEW.total_seconds() * 1000)}"
            "</MaxAllowedSkewMilliseconds>",
        )

    return answer


def bucket_in_region(region: str):
    """An S3 endpoint of another region, asked about a bucket that lives in `region`."""

    def answer(handler):
        bucket = handler.path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
        return _error(
            301,
            "PermanentRedirect",
            "The bucket you are attempting to access must be addressed using the specified "
            "endpoint. Please send all future requests to this endpoint.",
            f"<Endpoint>{bucket}.s3.{region}.amazonaws.com</Endpoint><Bucket>{bucket}</Bucket>",
            {"x-amz-bucket-region": region},
        )

    return answer
