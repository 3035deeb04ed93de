"""moto's server, authorizing each request under the IAM action name AWS uses, with the
condition keys of the collector's policy evaluated.

    python -m tests.fakes.moto_iam_server -H 127.0.0.1 -p PORT   (moto.server's arguments)

moto 5.2.5 authorizes a request as "<service>:<Action>", the service taken from the SigV4
credential scope, which is the signing name. For CloudWatch that is "monitoring", while IAM's
service prefix is "cloudwatch" (AWS Service Authorization Reference, "Actions, resources, and
condition keys for Amazon CloudWatch",
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html).
Unchanged, moto would refuse cloudwatch:PutMetricData to a policy that grants it, as AWS does
not. This launcher maps the signing name to the IAM prefix before moto evaluates the policies.

moto also hands identity policies no request context, so it ignores their Condition blocks: a
leaked collector key could list the whole bucket and overwrite objects on moto, and not on AWS.
This launcher gives the statements the condition keys the collector's policy uses and
evaluates them as AWS does ("IAM JSON policy elements: Condition operators",
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_condition_operators.html):
`s3:prefix` (the `prefix` query parameter of a list, s3:ListBucket), `s3:if-none-match` (the
If-None-Match header, s3:PutObject; "Enforce conditional writes on Amazon S3 buckets",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes-enforce.html) and
`cloudwatch:namespace` (PutMetricData's Namespace; "Using condition keys to limit access to
CloudWatch namespaces", https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/iam-cw-condition-keys-namespace.html),
`s3:x-amz-storage-class` and `s3:x-amz-server-side-encryption-customer-algorithm` (the
x-amz-storage-class and x-amz-server-side-encryption-customer-algorithm headers of a PUT;
"Actions, resources, and condition keys for Amazon S3",
https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html) and
`aws:SourceIp` (the address the request came from, on every service; "AWS global condition
context keys", https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html#condition-keys-sourceip)
with the IpAddress / NotIpAddress operators. On loopback, a client bound to 127.0.0.2 comes
from another address than the collector's 127.0.0.1.
A key the request does not carry fails every operator but Null and the ...IfExists ones.
Conditions on other keys stay unevaluated, as in moto.
The bucket policy's Deny statements are evaluated the same way, with `aws:PrincipalArn` (the IAM
user whose key signed), `aws:SecureTransport` and the S3 keys above: moto 5.2.5 evaluates a
bucket policy without any request context, so a Deny with conditions refuses everyone.
A statement whose condition fails does not apply; moto then refuses the request (it treats a
failed condition as a Deny, AWS as "not allowed by this statement": the same answer as long as
no other statement allows the action).
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
import re
from urllib.parse import parse_qs, urlsplit

import botocore.parsers
import flask
from moto.iam import access_control
from moto.iam.access_control import PermissionResult
from moto.iam.models import get_account_id_from, iam_backends
from moto.s3.exceptions import S3AccessDeniedError, S3ClientError
from moto.s3.models import FakeBucket
from moto.server import main

# S3 bucket metrics configurations and CloudWatch's reserved AWS/ namespaces, as AWS has them.
from tests.fakes import moto_monitoring  # noqa: F401

IAM_PREFIX_BY_SIGNING_NAME = {"monitoring": "cloudwatch"}
# The condition keys this launcher supplies; statements on others keep moto's behaviour.
EVALUATED_KEYS = (
    "s3:prefix",
    "s3:if-none-match",
    "s3:x-amz-storage-class",
    "s3:x-amz-server-side-encryption-customer-algorithm",
    "cloudwatch:namespace",
    "aws:SourceIp",
    "aws:PrincipalArn",
    "aws:SecureTransport",
    "s3:TlsVersion",  # never present over plain HTTP: NumericLessThan on it does not hold
)
# The S3 request headers whose value is the condition key of the same name.
S3_HEADER_KEYS = {
    "If-None-Match": "s3:if-none-match",
    "x-amz-storage-class": "s3:x-amz-storage-class",
    "x-amz-server-side-encryption-customer-algorithm": (
        "s3:x-amz-server-side-encryption-customer-algorithm"
    ),
}

_request_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "request_context", default=None
)
_moto_init = access_control.IAMRequestBase.__init__
_moto_check_action_permitted = access_control.IAMRequestBase.check_action_permitted
_moto_check_conditions = access_control.IAMPolicyStatement._check_conditions


def _init_with_iam_prefix(self, *args, **kwargs) -> None:
    _moto_init(self, *args, **kwargs)
    service, _, action = self._action.partition(":")
    self._action = f"{IAM_PREFIX_BY_SIGNING_NAME.get(service, service)}:{action}"


def request_parameters(headers, body: bytes) -> dict:
    """A CloudWatch request's parameters, in whichever protocol botocore picked."""
    content_type = headers.get("Content-Type", "")
    if "cbor" in content_type:  # smithy-rpc-v2-cbor
        cbor = botocore.parsers.RpcV2CBORParser()
        return cbor.parse_data_item(cbor.get_peekable_stream_from_bytes(body)) or {}
    if "json" in content_type:
        return json.loads(body or b"{}")
    return {k: v[0] for k, v in parse_qs((body or b"").decode()).items()}  # query


def request_context(action: str, path: str, headers, body: bytes = b"") -> dict[str, str]:
    """The evaluated condition keys this request carries (absent keys are left out)."""
    context: dict[str, str] = {}
    if flask.has_request_context() and flask.request.remote_addr:
        context["aws:SourceIp"] = flask.request.remote_addr
    if action == "cloudwatch:PutMetricData":
        namespace = request_parameters(headers, body).get("Namespace")
        if namespace is not None:
            context["cloudwatch:namespace"] = namespace
        return context
    if not action.startswith("s3:"):
        return context
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    if action == "s3:ListBucket" and "prefix" in query:
        context["s3:prefix"] = query["prefix"][0]
    for header, key in S3_HEADER_KEYS.items():
        value = headers.get(header)
        if value is not None:
            context[key] = value
    return context


# Objects written with a customer-provided key (SSE-C), by path: moto 5.2.5 ignores SSE-C, AWS
# then refuses a GET or HEAD without that key's headers with 400 InvalidRequest ("Protecting data
# with server-side encryption using customer-provided keys (SSE-C)",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/ServerSideEncryptionCustomerKeys.html).
SSE_C_HEADER = "x-amz-server-side-encryption-customer-algorithm"
_sse_c_objects: set[str] = set()


class SseCKeyRequired(S3ClientError):
    def __init__(self) -> None:
        super().__init__(
            "InvalidRequest",
            "The object was stored using a form of Server Side Encryption. The correct "
            "parameters must be provided to retrieve the object.",
        )


def _check_sse_c(action: str, method: str, path: str, headers) -> None:
    object_path = urlsplit(path).path
    if action == "s3:PutObject":  # a later plain PUT replaces the object
        if headers.get(SSE_C_HEADER):
            _sse_c_objects.add(object_path)
        else:
            _sse_c_objects.discard(object_path)
    elif method in ("GET", "HEAD") and object_path in _sse_c_objects:
        locked = not headers.get(SSE_C_HEADER)
        if locked:
            raise SseCKeyRequired()


def _check_action_permitted(self, resource: str) -> None:
    token = _request_context.set(
        request_context(self._action, self._path, self._headers, self._body)
    )
    try:
        _moto_check_action_permitted(self, resource)
    finally:
        _request_context.reset(token)
    if self._action.startswith("s3:"):
        _check_sse_c(self._action, self._method, self._path, self._headers)


def _like(actual: str, pattern: str) -> bool:
    """StringLike: `*` any run of characters, `?` one character, case-sensitive."""
    regex = re.escape(str(pattern)).replace(r"\*", ".*").replace(r"\?", ".")
    return re.fullmatch(regex, actual, re.DOTALL) is not None


def _operator_holds(operator: str, key: str, expected, context: dict[str, str]) -> bool:
    values = expected if isinstance(expected, list) else [expected]
    if operator == "Null":
        # "true": the request must not carry the key; "false": it must.
        return all((key not in context) == (str(v).lower() == "true") for v in values)
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if key not in context:
        return if_exists
    actual = context[key]
    if base == "StringEquals":
        return actual in values
    if base == "StringNotEquals":
        return actual not in values
    if base == "StringLike":
        return any(_like(actual, v) for v in values)
    if base == "StringNotLike":
        return not any(_like(actual, v) for v in values)
    if base in ("ArnEquals", "ArnLike"):
        return any(_like(actual, v) for v in values)
    if base == "Bool":
        return actual.lower() in [str(v).lower() for v in values]
    if base in ("IpAddress", "NotIpAddress"):
        address = ipaddress.ip_address(actual)
        inside = any(address in ipaddress.ip_network(v, strict=False) for v in values)
        return inside if base == "IpAddress" else not inside
    return False  # an operator this launcher cannot evaluate on a key it supplies: not allowed


def conditions_hold(conditions: dict, context: dict[str, str]) -> bool:
    """AWS: every operator's every key must hold; keys outside EVALUATED_KEYS are skipped."""
    return all(
        _operator_holds(operator, key, expected, context)
        for operator, keys in conditions.items()
        for key, expected in keys.items()
        if key in EVALUATED_KEYS
    )


def _check_conditions(self, incoming_condition_values) -> bool:
    context = _request_context.get()
    if incoming_condition_values is not None or context is None:
        return _moto_check_conditions(self, incoming_condition_values)  # trust policies
    return conditions_hold(self._statement.get("Condition") or {}, context)


def principal_arn(headers) -> str | None:
    """The ARN of the IAM user whose access key signed the request (SigV4 Credential=...)."""
    match = re.search(r"Credential=([^/,\s]+)/", headers.get("Authorization", ""))
    if not match:
        return None
    account = get_account_id_from(match[1])
    for backend in iam_backends[account].values():
        key = backend.access_keys.get(match[1])
        if key is not None and key.user_name:
            return f"arn:aws:iam::{account}:user/{key.user_name}"
    return None


def bucket_policy_context() -> dict[str, str]:
    """The condition keys of the S3 request being served (empty outside a request)."""
    if not flask.has_request_context():
        return {}
    request = flask.request
    context = request_context("s3:", request.full_path, request.headers)
    context["aws:SecureTransport"] = "true" if request.scheme == "https" else "false"
    arn = principal_arn(request.headers)
    if arn:
        context["aws:PrincipalArn"] = arn
    return context


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _bucket_permission(self, action: str, resource: str):
    """AWS: an explicit Deny in the bucket policy refuses the request whatever the identity
    policies allow; its Allow statements add nothing for this account's own users."""
    if self.policy is None:
        return PermissionResult.NEUTRAL
    context = bucket_policy_context()
    for statement in json.loads(self.policy)["Statement"]:
        if statement.get("Effect") != "Deny":
            continue
        if not any(_like(action, a) for a in _listed(statement.get("Action", []))):
            continue
        if not any(_like(resource, r) for r in _listed(statement.get("Resource", []))):
            continue
        if conditions_hold(statement.get("Condition") or {}, context):
            # AWS answers AccessDenied (moto's DENIED would be a bare 403 without a body).
            raise S3AccessDeniedError()
    return PermissionResult.NEUTRAL


access_control.IAMRequestBase.__init__ = _init_with_iam_prefix
access_control.IAMRequestBase.check_action_permitted = _check_action_permitted
access_control.IAMPolicyStatement._check_conditions = _check_conditions
FakeBucket.get_permission = _bucket_permission

if __name__ == "__main__":
    main()
