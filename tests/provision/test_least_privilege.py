"""Least privilege, proven on a moto that enforces IAM.

The bucket and the collector's IAM user come from the real roles (provision.yml --tags bucket,iam,
run as an administrator user on an enforcing moto); the tests then sign as the collector's key
that roles/iam stored, with the policy roles/iam rendered.

moto 5.2.5 matches Action and Resource of identity policies but hands their Condition blocks no
request context; our launcher (tests/fakes/moto_iam_server.py) supplies the three keys the policy
uses (s3:prefix, s3:if-none-match, cloudwatch:namespace) and evaluates them as AWS does, so a
refusal that rests on a condition (no If-None-Match, a list without our prefix, another
CloudWatch namespace) is asserted at the wire, and the collector's own requests are checked
there to satisfy every condition.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import boto3
import botocore.exceptions
import botocore.parsers
import pytest
import yaml

from collector.config import Config, RotateConfig, S3Config, SpoolConfig, XConfig
from collector.sink.s3 import BucketMissing, S3AccessDenied, S3Sink
from collector.telemetry.cloudwatch import NAMESPACE  # the one the publisher uses
from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    object_lines,
    run_cli,
    wait_until,
    write_config,
)
from tests.conftest import REPO, AccessKey, IamMoto, enforcing_moto_server
from tests.fakes.http_recorder import Exchange, RecordingProxy
from tests.fakes.tcp_proxy import OutageProxy
from tests.fakes.x_server import FakeXServer

USER = "twittersnake-collector"
PREFIX = "tweets"  # what tests.collector_support.write_config configures
OTHER_BUCKET = "someone-elses-bucket"
# twittersnake_collector_source_cidrs in the sandbox inventory: the collector's address.
SOURCE_CIDR = "127.0.0.1/32"


def error_code(excinfo: pytest.ExceptionInfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def refused(call, *args, **kwargs) -> str:
    """The error code of a call that must fail; AccessDenied-like codes are what IAM answers."""
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        call(*args, **kwargs)
    return error_code(excinfo)


def refused_in_cloudwatch(call, **kwargs) -> None:
    """moto answers CloudWatch refusals in XML, which botocore's CloudWatch protocol cannot
    parse into a code: the status and the body's AccessDenied are what the client sees."""
    with pytest.raises(botocore.exceptions.ClientError) as excinfo:
        call(**kwargs)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "AccessDenied" in str(excinfo.value)


def recap_changed(output: str) -> int:
    recap = output.split("PLAY RECAP")[-1]
    return int(recap.split("changed=")[1].split()[0])


# -- the moto_iam fixture itself ------------------------------------------------------------------


def test_moto_iam_refuses_what_a_narrow_policy_lacks(moto_iam):
    admin_s3 = moto_iam.client("s3")
    admin_s3.create_bucket(Bucket="allowed")
    admin_s3.create_bucket(Bucket="other")
    reader = moto_iam.create_user(
        "reader",
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::allowed/*"}
            ],
        },
    )
    admin_s3.put_object(Bucket="allowed", Key="a.txt", Body=b"a")
    admin_s3.put_object(Bucket="other", Key="b.txt", Body=b"b")
    s3 = moto_iam.client("s3", reader)

    assert s3.get_object(Bucket="allowed", Key="a.txt")["Body"].read() == b"a"
    assert refused(s3.get_object, Bucket="other", Key="b.txt") == "AccessDenied"
    assert refused(s3.put_object, Bucket="allowed", Key="c.txt", Body=b"c") == "AccessDenied"
    assert refused(moto_iam.client("iam", reader).list_users) == "AccessDenied"


def test_moto_iam_refuses_unknown_keys_and_bad_signatures(moto_iam):
    stranger = AccessKey("stranger", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCY")
    assert refused(moto_iam.client("s3", stranger).list_buckets) == "InvalidAccessKeyId"
    forged = AccessKey("administrator", moto_iam.admin.access_key_id, "not-the-secret")
    assert refused(moto_iam.client("s3", forged).list_buckets) == "SignatureDoesNotMatch"


# -- the collector's grant, as roles/iam renders it -----------------------------------------------


@dataclass
class Grant:
    moto: IamMoto
    collector: AccessKey
    statements: dict[str, dict]  # by Sid
    runs: list[subprocess.CompletedProcess]

    def s3(self):
        return self.moto.client("s3", self.collector)


def provision(
    moto: IamMoto,
    tmp: Path,
    *args: str,
    playbook: str = "playbooks/provision.yml",
    tags: str = "bucket,iam",
    **inventory: object,
) -> subprocess.CompletedProcess:
    """provision.yml --tags bucket,iam as the administrator (or another playbook and tags, with
    more `inventory` variables); its key goes in a file, not argv."""
    extra = tmp / "extra-vars.json"
    extra.write_text(
        json.dumps(
            {
                "aws_endpoint_url": moto.url,
                "aws_access_key": moto.admin.access_key_id,
                "aws_secret_key": moto.admin.secret_access_key,
                "twittersnake_bucket": BUCKET,
                "twittersnake_prefix": PREFIX,
                "twittersnake_credentials_file": str(tmp / "collector-credentials.yml"),
                **inventory,
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    done = subprocess.run(
        [
            str(REPO / ".venv/bin/ansible-playbook"),
            playbook,
            "-i",
            "inventory/sandbox",
            "--tags",
            tags,
            "-e",
            f"@{extra}",
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def grant(tmp_path_factory) -> Iterator[Grant]:
    """Its own enforcing moto (so no other test resets it): bucket + IAM in check mode on the
    fresh account (creates nothing, fails nothing), then provisioned twice."""
    server = enforcing_moto_server()
    server.start()
    try:
        moto = IamMoto(server)
        moto.reset()
        tmp = tmp_path_factory.mktemp("least-privilege")
        check_first = provision(moto, tmp, "--check")
        assert [u["UserName"] for u in moto.client("iam").list_users()["Users"]] == [
            "administrator"
        ], check_first.stdout[-3000:]
        runs = [provision(moto, tmp), provision(moto, tmp)]
        stored = yaml.safe_load((tmp / "collector-credentials.yml").read_text())
        collector = AccessKey(
            USER,
            stored["collector_aws_access_key_id"],
            stored["collector_aws_secret_access_key"],
        )
        iam = moto.client("iam")
        (name,) = iam.list_user_policies(UserName=USER)["PolicyNames"]
        document = iam.get_user_policy(UserName=USER, PolicyName=name)["PolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        moto.client("s3").create_bucket(Bucket=OTHER_BUCKET)
        yield Grant(moto, collector, {s["Sid"]: s for s in document["Statement"]}, runs)
    finally:
        server.stop()


@pytest.mark.slow  # the `grant` footprint: ansible-playbook runs against moto
def test_the_policy_grants_exactly_what_the_collector_calls(grant):
    assert {sid: (s["Action"], s["Resource"]) for sid, s in grant.statements.items()} == {
        "CreateObjectsUnderPrefix": (["s3:PutObject"], f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"),
        "ReadObjectsUnderPrefix": (["s3:GetObject"], f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"),
        "ListUnderPrefix": (["s3:ListBucket"], f"arn:aws:s3:::{BUCKET}"),
        "PublishMetricsInNamespace": (["cloudwatch:PutMetricData"], "*"),
    }
    assert all(s["Effect"] == "Allow" for s in grant.statements.values())


@pytest.mark.slow  # the `grant` footprint: ansible-playbook runs against moto
def test_collector_creates_heads_and_gets_its_own_objects(grant):
    s3 = grant.s3()
    key = f"{PREFIX}/dt=2026-01-01/hour=00/test-1-000001.jsonl.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}\n", IfNoneMatch="*")
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == 3
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"{}\n"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/", MaxKeys=1)
    assert [o["Key"] for o in listed["Contents"]] == [key]
    # A second create of the same key is S3's 412, not a silent overwrite.
    assert (
        refused(s3.put_object, Bucket=BUCKET, Key=key, Body=b"[]\n", IfNoneMatch="*")
        == "PreconditionFailed"
    )
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"{}\n"


@pytest.mark.slow  # the `grant` footprint: ansible-playbook runs against moto
def test_collector_may_not_delete_or_leave_its_prefix_or_bucket(grant):
    s3 = grant.s3()
    mine = f"{PREFIX}/dt=2026-01-01/hour=00/test-1-000002.jsonl.gz"
    s3.put_object(Bucket=BUCKET, Key=mine, Body=b"{}\n", IfNoneMatch="*")
    grant.moto.client("s3").put_object(Bucket=BUCKET, Key="elsewhere/x.json", Body=b"{}")
    grant.moto.client("s3").put_object(Bucket=OTHER_BUCKET, Key=f"{PREFIX}/x.json", Body=b"{}")

    assert refused(s3.delete_object, Bucket=BUCKET, Key=mine) == "AccessDenied"
    # DeleteObjects answers 200 and refuses key by key, as on AWS.
    answer = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": mine}]})
    assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [(mine, "AccessDenied")]
    assert not answer.get("Deleted")
    assert s3.get_object(Bucket=BUCKET, Key=mine)["Body"].read() == b"{}\n"
    for key in ("elsewhere/x.json", f"{PREFIX}-2/x.json", "x.json"):
        assert (
            refused(s3.put_object, Bucket=BUCKET, Key=key, Body=b"{}", IfNoneMatch="*")
            == "AccessDenied"
        ), key
    assert refused(s3.get_object, Bucket=BUCKET, Key="elsewhere/x.json") == "AccessDenied"
    assert refused(s3.head_object, Bucket=BUCKET, Key="elsewhere/x.json") in ("403", "AccessDenied")
    for call, kwargs in (
        (s3.put_object, {"Key": f"{PREFIX}/y.json", "Body": b"{}", "IfNoneMatch": "*"}),
        (s3.get_object, {"Key": f"{PREFIX}/x.json"}),
        (s3.list_objects_v2, {"Prefix": f"{PREFIX}/"}),
    ):
        assert refused(call, Bucket=OTHER_BUCKET, **kwargs) == "AccessDenied", call
    assert refused(s3.list_buckets) == "AccessDenied"
    assert (
        refused(
            s3.put_bucket_versioning, Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"}
        )
        == "AccessDenied"
    )
    assert refused(s3.delete_bucket_policy, Bucket=BUCKET) == "AccessDenied"


@pytest.mark.slow  # the `grant` footprint: ansible-playbook runs against moto
def test_collector_may_not_call_iam_or_ec2(grant):
    iam = grant.moto.client("iam", grant.collector)
    ec2 = grant.moto.client("ec2", grant.collector)
    assert refused(iam.list_users) == "AccessDenied"
    assert refused(iam.create_access_key, UserName=USER) == "AccessDenied"
    assert refused(iam.put_user_policy, UserName=USER, PolicyName="more", PolicyDocument="{}") == (
        "AccessDenied"
    )
    assert refused(ec2.describe_instances) in ("AccessDenied", "UnauthorizedOperation")
    assert refused(ec2.describe_security_groups) in ("AccessDenied", "UnauthorizedOperation")
    assert refused(grant.moto.client("sns", grant.collector).list_topics) == "AccessDenied"


@pytest.mark.slow  # the `grant` footprint: ansible-playbook runs against moto
def test_collector_publishes_metrics_and_nothing_else_in_cloudwatch(grant):
    """PutMetricData is allowed in our namespace only; other CloudWatch actions are refused."""
    cloudwatch = grant.moto.client("cloudwatch", grant.collector)
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE, MetricData=[{"MetricName": "posts_received", "Value": 1.0}]
    )
    refused_in_cloudwatch(
        cloudwatch.put_metric_data,
        Namespace="AWS/EC2",
        MetricData=[{"MetricName": "CPUUtilization", "Value": 1.0}],
    )
    refused_in_cloudwatch(cloudwatch.list_metrics)
    refused_in_cloudwatch(
        cloudwatch.put_metric_alarm,
        AlarmName="x",
        MetricName="posts_received",
        Namespace=NAMESPACE,
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="LessThanThreshold",
    )
    statement = grant.statements["PublishMetricsInNamespace"]
    assert statement["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": NAMESPACE},
        "IpAddress": {"aws:SourceIp": [SOURCE_CIDR]},
    }


@pytest.mark.slow  # the `grant` footprint: ansible-playbook runs against moto
def test_puts_are_creates_only_and_lists_stay_under_the_prefix(grant):
    """What a leaked key could do against the collection. A request without If-None-Match carries
    no s3:if-none-match key, so Null=false refuses it (an overwrite, a copy onto a key, a multipart
    upload); a list without a prefix carries no s3:prefix key, so plain StringLike (not
    ...IfExists) refuses it, and so does HeadBucket (s3:ListBucket without a prefix)."""
    s3 = grant.s3()
    key = f"{PREFIX}/dt=2026-01-01/hour=00/test-1-000003.jsonl.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}\n", IfNoneMatch="*")
    for call, kwargs in (
        (s3.put_object, {"Key": key, "Body": b"overwritten"}),
        (s3.put_object, {"Key": f"{PREFIX}/new.jsonl.gz", "Body": b"{}"}),
        (s3.copy_object, {"Key": key, "CopySource": {"Bucket": BUCKET, "Key": key}}),
        (s3.create_multipart_upload, {"Key": key}),
        (s3.list_objects_v2, {}),
        (s3.list_objects, {}),
        (s3.list_objects_v2, {"Prefix": ""}),
        (s3.list_objects_v2, {"Prefix": PREFIX}),
        (s3.list_objects_v2, {"Prefix": "elsewhere/"}),
        (s3.list_object_versions, {"Prefix": f"{PREFIX}/"}),
    ):
        assert refused(call, Bucket=BUCKET, **kwargs) == "AccessDenied", (call, kwargs)
    assert refused(s3.head_bucket, Bucket=BUCKET) in ("403", "AccessDenied")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"{}\n"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/dt=2026-01-01/", Delimiter="/")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == [f"{PREFIX}/dt=2026-01-01/hour=00/"]
    assert grant.statements["CreateObjectsUnderPrefix"]["Condition"] == {
        "StringEquals": {"s3:if-none-match": "*"},
        "StringEqualsIfExists": {"s3:x-amz-storage-class": "STANDARD"},
        "Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "true"},
        "IpAddress": {"aws:SourceIp": [SOURCE_CIDR]},
    }
    assert grant.statements["ListUnderPrefix"]["Condition"] == {
        "StringLike": {"s3:prefix": [f"{PREFIX}/*"]},
        "IpAddress": {"aws:SourceIp": [SOURCE_CIDR]},
    }
    assert grant.statements["ReadObjectsUnderPrefix"]["Condition"] == {
        "IpAddress": {"aws:SourceIp": [SOURCE_CIDR]}
    }


@pytest.mark.slow  # the `grant` footprint: ansible-playbook runs against moto
def test_a_put_that_would_overwrite_archive_or_lock_away_is_refused(grant):
    """What the key could still do with a header of its choosing: If-None-Match naming an ETag
    (not `*`) overwrites, an archived storage class makes the object unreadable until restored
    (the report would skip it), SSE-C makes it readable only with the writer's key."""
    s3 = grant.s3()
    key = f"{PREFIX}/dt=2026-01-01/hour=00/test-1-000004.jsonl.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}\n", IfNoneMatch="*")
    new = f"{PREFIX}/dt=2026-01-01/hour=00/test-1-000005.jsonl.gz"
    sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": "k" * 32}
    for target, kwargs in (
        (key, {"IfNoneMatch": '"x"'}),
        (new, {"IfNoneMatch": "*", "StorageClass": "DEEP_ARCHIVE"}),
        (new, {"IfNoneMatch": "*", "StorageClass": "GLACIER"}),
        (new, {"IfNoneMatch": "*", **sse_c}),
    ):
        code = refused(s3.put_object, Bucket=BUCKET, Key=target, Body=b"forged\n", **kwargs)
        assert code == "AccessDenied", kwargs
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"{}\n"
    admin = grant.moto.client("s3")
    assert "Contents" not in admin.list_objects_v2(Bucket=BUCKET, Prefix=new)
    # The standard class, said out loud, is what the collector may write.
    s3.put_object(Bucket=BUCKET, Key=new, Body=b"{}\n", IfNoneMatch="*", StorageClass="STANDARD")


@pytest.mark.slow  # the `grant` footprint: ansible-playbook runs against moto
def test_the_key_is_useless_from_another_address(grant):
    """aws:SourceIp: the key works from the collector's address only (the instance's Elastic IP
    on AWS, 127.0.0.1 in the sandbox). From 127.0.0.2, through a forwarder bound to it, the
    forged `Healthy=1` that would keep the alarms quiet, a create, a read and a list are all
    refused; the same requests from 127.0.0.1 pass."""
    forged = {"Namespace": NAMESPACE, "MetricData": [{"MetricName": "Healthy", "Value": 1.0}]}
    mine = f"{PREFIX}/dt=2026-01-01/hour=00/test-1-000006.jsonl.gz"
    grant.moto.client("cloudwatch", grant.collector).put_metric_data(**forged)
    grant.s3().put_object(Bucket=BUCKET, Key=mine, Body=b"{}", IfNoneMatch="*")

    port = int(grant.moto.url.rsplit(":", 1)[1])
    elsewhere = OutageProxy(port, source_address="127.0.0.2").start()
    try:

        def client(service: str):
            return boto3.client(
                service, endpoint_url=elsewhere.url, region_name="us-east-1",
                aws_access_key_id=grant.collector.access_key_id,
                aws_secret_access_key=grant.collector.secret_access_key,
            )  # fmt: skip

        s3 = client("s3")
        refused_in_cloudwatch(client("cloudwatch").put_metric_data, **forged)
        new = f"{PREFIX}/dt=2026-01-01/hour=00/test-1-000007.jsonl.gz"
        assert refused(s3.put_object, Bucket=BUCKET, Key=new, Body=b"{}", IfNoneMatch="*") == (
            "AccessDenied"
        )
        assert refused(s3.get_object, Bucket=BUCKET, Key=mine) == "AccessDenied"
        assert refused(s3.list_objects_v2, Bucket=BUCKET, Prefix=f"{PREFIX}/") == "AccessDenied"
    finally:
        elsewhere.stop()


@pytest.mark.slow  # the `grant` footprint: ansible-playbook runs against moto
def test_the_bucket_policy_lets_the_collector_only_create_under_its_prefix(grant):
    """A second line behind the identity policy: whatever is ever attached to the collector's
    user, the bucket denies it a PutObject without If-None-Match under the prefix. The sandbox
    inventory leaves the TLS statements out (plain-HTTP moto); test_provision checks them."""
    account = grant.moto.client("sts").get_caller_identity()["Account"]
    policy = json.loads(grant.moto.client("s3").get_bucket_policy(Bucket=BUCKET)["Policy"])
    (deny,) = policy["Statement"]
    assert deny == {
        "Sid": "DenyCollectorOverwrites",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:PutObject",
        "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*",
        "Condition": {
            "Null": {"s3:if-none-match": "true"},
            "ArnEquals": {"aws:PrincipalArn": f"arn:aws:iam::{account}:user/{USER}"},
        },
    }
    # The attack it stops: a broader policy attached to the collector's user by mistake.
    iam = grant.moto.client("iam")
    broad = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "*"}],
    }
    key = f"{PREFIX}/dt=2026-01-01/hour=00/test-1-000008.jsonl.gz"
    s3 = grant.s3()
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"{}\n", IfNoneMatch="*")
    iam.put_user_policy(UserName=USER, PolicyName="too-broad", PolicyDocument=json.dumps(broad))
    try:
        assert refused(s3.put_object, Bucket=BUCKET, Key=key, Body=b"overwritten") == (
            "AccessDenied"
        )
        # An administrator still rewrites (collector purge).
        grant.moto.client("s3").put_object(Bucket=BUCKET, Key=key, Body=b"[]\n")
    finally:
        iam.delete_user_policy(UserName=USER, PolicyName="too-broad")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"[]\n"


# -- the collector's own requests, on the wire ----------------------------------------------------


def operation(exchange: Exchange) -> str | None:
    """The CloudWatch operation of a request in any of the protocols botocore may pick."""
    target = exchange.headers.get("x-amz-target", "")
    if target:  # awsJson1_0
        return target.rsplit(".", 1)[-1]
    if "/operation/" in exchange.path:  # smithy-rpc-v2-cbor
        return exchange.path.rsplit("/", 1)[-1]
    if exchange.method == "POST":  # query
        return parse_qs(exchange.body.decode()).get("Action", [None])[0]
    return None


def request_parameters(exchange: Exchange) -> dict:
    content_type = exchange.headers.get("content-type", "")
    if "json" in content_type:
        return json.loads(exchange.body)
    if "cbor" in content_type:
        cbor = botocore.parsers.RpcV2CBORParser()
        return cbor.parse_data_item(cbor.get_peekable_stream_from_bytes(exchange.body))
    return {k: v[0] for k, v in parse_qs(exchange.body.decode()).items()}


@pytest.mark.slow  # the `grant` footprint: ansible-playbook runs against moto
def test_a_collector_run_satisfies_every_condition_of_its_policy(grant, tmp_path):
    """A real `python -m collector run` (CloudWatch on), signing with the collector's key through
    a recording proxy: every request is one the policy allows (no 403), each PUT carries
    If-None-Match: *, each list a prefix under ours (the bucket check at start included) and
    each PutMetricData the namespace TwitterSnake."""
    proxy = RecordingProxy(int(grant.moto.url.rsplit(":", 1)[1])).start()
    x = FakeXServer(token=TOKEN, keepalive_interval=1.0, count=0).start()
    admin_s3 = grant.moto.client("s3")

    def our_objects() -> list[str]:
        listed = admin_s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/dt=")
        return [o["Key"] for o in listed.get("Contents", [])]

    before = set(our_objects())
    env = {**grant.moto.env(grant.collector), "AWS_ENDPOINT_URL": proxy.url}
    collector = CollectorProcess(
        write_config(
            tmp_path,
            x.url,
            s3_endpoint=proxy.url,
            max_records=50,
            max_seconds=1,
            extra=f'[cloudwatch]\nenabled = true\nendpoint_url = "{proxy.url}"\n'
            "interval_seconds = 1\n",
        ),
        env=env,
    )

    def metric_posts() -> list[Exchange]:
        return [e for e in proxy.exchanges if operation(e) == "PutMetricData"]

    try:
        wait_until(lambda: x.connections >= 1, 30)
        x.count = 120
        wait_until(lambda: len(set(our_objects()) - before) >= 2, 60, 0.5)
        wait_until(metric_posts, 30, 0.5)
        assert collector.stop() == 0, collector.log[-3000:]
    finally:
        if collector.process.poll() is None:
            collector.kill()
        x.stop()
        proxy.stop()

    shipped = sorted(set(our_objects()) - before)
    ids = {
        json.loads(line)["data"]["id"]
        for key in shipped
        for line in object_lines(admin_s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(), key)
    }
    assert ids == set(x.sent_ids)

    s3_requests = [e for e in proxy.exchanges if e.path.startswith(f"/{BUCKET}")]
    puts = [e for e in s3_requests if e.method == "PUT"]
    lists = [e for e in s3_requests if e.method == "GET" and e.path.rstrip("/") == f"/{BUCKET}"]
    assert len(puts) >= len(shipped) and lists, proxy.exchanges
    assert [e.headers.get("if-none-match") for e in puts] == ["*"] * len(puts)
    assert all(e.path.startswith(f"/{BUCKET}/{PREFIX}/") for e in puts), puts
    for listing in lists:
        (prefix,) = listing.query["prefix"]
        assert prefix.startswith(f"{PREFIX}/"), listing
    # The bucket check at start: ListObjectsV2, our prefix, one key at most.
    assert lists[0].query.get("list-type") == ["2"] and lists[0].query.get("max-keys") == ["1"]
    assert {request_parameters(e)["Namespace"] for e in metric_posts()} == {NAMESPACE}
    assert [(e.method, e.path, e.status) for e in proxy.exchanges if e.status == 403] == []
    assert {e.method for e in s3_requests} <= {"PUT", "GET", "HEAD"}
    others = [e for e in proxy.exchanges if e not in s3_requests and e not in metric_posts()]
    assert others == []


# -- secrets stay out of the repository -----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "inventory/aws/group_vars/all/vault.yml",
        ".credentials/collector-aws.vault.yml",  # the AWS inventory's twittersnake_credentials_file
        ".credentials/notebook-aws.vault.yml",  # its twittersnake_notebook_credentials_file
    ],
)
def test_secret_files_are_git_ignored(path):
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-v", path],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"{path} is not git-ignored: {done.stderr}"


# -- the bucket check at start: missing bucket and access denied are told apart ------------------


def sink_signed_as(moto: IamMoto, key: AccessKey, bucket: str) -> S3Sink:
    cfg = Config(
        collector_id="test-1",
        x=XConfig(),
        spool=SpoolConfig(dir=Path("/nonexistent")),
        rotate=RotateConfig(),
        s3=S3Config(bucket=bucket, prefix=PREFIX),
    )
    return S3Sink(cfg, s3_client=moto.client("s3", key))


def test_bucket_check_tells_access_denied_from_a_missing_bucket(moto_iam):
    moto_iam.client("s3").create_bucket(Bucket=BUCKET)
    writer = moto_iam.create_user(
        "writer-only",
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "s3:PutObject",
                    "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*",
                }
            ],
        },
    )
    with pytest.raises(S3AccessDenied) as denied:
        sink_signed_as(moto_iam, writer, BUCKET).check_bucket()
    assert str(denied.value) == (
        f"S3 bucket '{BUCKET}': access denied (AccessDenied) to ListObjectsV2 under 'tweets/' "
        "(the collector's credentials need s3:ListBucket with s3:prefix 'tweets/*')"
    )
    with pytest.raises(BucketMissing, match="S3 bucket 'no-such-bucket' does not exist"):
        sink_signed_as(moto_iam, moto_iam.admin, "no-such-bucket").check_bucket()
    sink_signed_as(moto_iam, moto_iam.admin, BUCKET).check_bucket()  # the bucket answers


def test_a_collector_refused_at_start_says_so_and_keeps_collecting(moto_iam, tmp_path):
    """Access denied is not fatal (a policy can be fixed live) but is never silent: an error line,
    and `collector status` says degraded with the refusal as the reason (exit 1)."""
    moto_iam.client("s3").create_bucket(Bucket=BUCKET)
    writer = moto_iam.create_user(
        "writer-only",
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "s3:PutObject",
                    "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*",
                }
            ],
        },
    )
    x = FakeXServer(token=TOKEN, keepalive_interval=1.0, count=0).start()
    collector = CollectorProcess(
        write_config(tmp_path, x.url, s3_endpoint=moto_iam.url), env=moto_iam.env(writer)
    )
    try:
        wait_until(lambda: x.connections >= 1, 30)
        assert collector.process.poll() is None
        assert (
            "S3 refuses the collector's credentials at start, uploads will retry: "
            f"S3 bucket '{BUCKET}': access denied (AccessDenied) to ListObjectsV2" in collector.log
        ), collector.log[-2000:]

        def reported() -> dict | None:
            done = run_cli("status", "--json", "--config", str(tmp_path / "collector.toml"))
            shown = json.loads(done.stdout) if done.stdout.startswith("{") else {}
            return (done.returncode, shown) if shown.get("health_reason") else None

        code, shown = wait_until(reported, 30, 0.5)
        assert code == 1 and shown["health"] == "degraded", shown
        assert "access denied (AccessDenied) to ListObjectsV2" in shown["health_reason"], shown
        assert collector.stop() == 0, collector.log[-2000:]
    finally:
        if collector.process.poll() is None:
            collector.kill()
        x.stop()
