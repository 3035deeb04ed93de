"""What AWS does, and moto 5.2.5 does not, for the alarm S3 itself feeds.

    python -m tests.fakes.moto_monitoring -H 127.0.0.1 -p PORT   (moto.server's arguments)

The tests' plain moto server runs this (tests/conftest.py MotoServer); the IAM-enforcing one
(tests/fakes/moto_iam_server.py) imports it, so its patches apply there too. Without them, a
teardown on moto would delete the bucket (a DELETE of `?metrics` is a DeleteBucket to moto).

S3 bucket metrics configurations (PutBucketMetricsConfiguration, GetBucketMetricsConfiguration,
DeleteBucketMetricsConfiguration, ListBucketMetricsConfigurations: `?metrics` on the bucket). moto
routes these requests to the bucket itself: a PUT answers 200 and stores nothing, a GET answers the
object listing (boto3 reads an empty configuration), a DELETE deletes the bucket. Here they
store, return and delete the configuration as AWS does ("CloudWatch metrics configurations",
https://docs.aws.amazon.com/AmazonS3/latest/userguide/metrics-configurations.html; API reference
PutBucketMetricsConfiguration: an Id of at most 64 letters, digits, '.', '-' and '_', the same in
the query and the body; an unknown Id answers 404 NoSuchConfiguration; the wording of the 400
InvalidArgument for a bad Id is ours), authorized under the IAM actions AWS names
(s3:PutMetricsConfiguration for a put and a delete, s3:GetMetricsConfiguration for a get and a
list).

CloudWatch's reserved namespaces: PutMetricData into a namespace beginning with "AWS/" is refused,
whoever signs ("You cannot specify a namespace that begins with "AWS/". Namespaces that begin with
"AWS/" are reserved for use by Amazon Web Services products.", PutMetricData's Namespace in the
CloudWatch API reference), with 400 InvalidParameterValue "The value AWS/S3 for parameter Namespace
is invalid." (AWS's answer as boto3 users quote it,
https://github.com/boto/boto3/issues/1847); moto 5.2.5 stores the data. Only AWS publishes
there, so an alarm on AWS/S3 PutRequests cannot be fed by any key.
moto checks the signer's policies first: a key without cloudwatch:PutMetricData in that namespace
(the collector's) gets AccessDenied before this check.
"""

from __future__ import annotations

import re
from xml.etree import ElementTree

from moto.cloudwatch.exceptions import InvalidParameterValue
from moto.cloudwatch.models import CloudWatchBackend
from moto.s3.responses import S3Response
from moto.server import main

RESERVED_NAMESPACE_PREFIX = "AWS/"
S3_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
METRICS_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The IAM action each method of `?metrics` is authorized as (Service Authorization Reference,
# "Actions, resources, and condition keys for Amazon S3").
METRICS_ACTIONS = {
    "PUT": "PutMetricsConfiguration",
    "DELETE": "PutMetricsConfiguration",
    "GET": "GetMetricsConfiguration",
}


def s3_error(status: int, code: str, message: str):
    """An S3 error answer, as S3 writes it (moto's serializer knows only the codes in its model)."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return status, {"content-type": "application/xml"}, body.encode()


# -- CloudWatch ----------------------------------------------------------------------------------

_moto_put_metric_data = CloudWatchBackend.put_metric_data


def _put_metric_data(self, namespace: str, metric_data: list) -> None:
    if namespace.startswith(RESERVED_NAMESPACE_PREFIX):
        raise InvalidParameterValue(f"The value {namespace} for parameter Namespace is invalid.")
    _moto_put_metric_data(self, namespace, metric_data)


# -- S3 bucket metrics configurations -------------------------------------------------------------


def metrics_configurations(bucket) -> dict[str, bytes]:
    """Id -> the configuration's XML document as stored (kept on moto's bucket object, so a reset
    or a deleted bucket takes them along)."""
    if not hasattr(bucket, "twittersnake_metrics_configurations"):
        bucket.twittersnake_metrics_configurations = {}
    return bucket.twittersnake_metrics_configurations


def _configuration_document(body: bytes, config_id: str) -> bytes | None:
    """The stored form of a PUT's body: its MetricsConfiguration; None when its Id is not the
    query's."""
    root = ElementTree.fromstring(body)
    if (root.findtext(f"{{{S3_XMLNS}}}Id") or root.findtext("Id")) != config_id:
        return None
    ElementTree.register_namespace("", S3_XMLNS)
    return ElementTree.tostring(root, encoding="utf-8")


def _metrics_response(self: S3Response, method: str, bucket_name: str, querystring: dict):
    self.data["Action"] = METRICS_ACTIONS[method]
    self._authenticate_and_authorize_s3_action(bucket_name=bucket_name)
    configurations = metrics_configurations(self.backend.get_bucket(bucket_name))
    config_id = querystring.get("id", [None])[0]
    if method == "GET" and config_id is None:  # ListBucketMetricsConfigurations
        listed = b"".join(configurations.values())
        head = f'<ListMetricsConfigurationsResult xmlns="{S3_XMLNS}">'
        body = f"{head}<IsTruncated>false</IsTruncated>".encode() + listed
        body += b"</ListMetricsConfigurationsResult>"
        return 200, {"content-type": "application/xml"}, body
    if config_id is None or not METRICS_ID.fullmatch(config_id):
        return s3_error(400, "InvalidArgument", "Invalid id")
    if method == "PUT":
        document = _configuration_document(self.body or b"", config_id)
        if document is None:
            return s3_error(400, "InvalidArgument", "The Id in the body is not the id parameter")
        configurations[config_id] = document
        return 200, {}, b""
    if config_id not in configurations:
        return s3_error(404, "NoSuchConfiguration", "The specified configuration does not exist.")
    if method == "DELETE":
        del configurations[config_id]
        return 204, {}, b""
    return 200, {"content-type": "application/xml"}, configurations[config_id]


def _with_metrics(method: str, moto_handler):
    def handler(self, *args):
        # put: (request, bucket_name, querystring); get and delete: (bucket_name, querystring)
        bucket_name, querystring = args[-2], args[-1]
        if "metrics" in querystring:
            return _metrics_response(self, method, bucket_name, querystring)
        return moto_handler(self, *args)

    return handler


S3Response._bucket_response_put = _with_metrics("PUT", S3Response._bucket_response_put)
S3Response._bucket_response_get = _with_metrics("GET", S3Response._bucket_response_get)
S3Response._bucket_response_delete = _with_metrics("DELETE", S3Response._bucket_response_delete)
CloudWatchBackend.put_metric_data = _put_metric_data

if __name__ == "__main__":
    main()
