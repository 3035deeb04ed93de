"""A leaked collector key works from nowhere but the instance: provisioning allocates an Elastic
IP once, binds every statement of the collector's policy to it (aws:SourceIp), attaches it to
the instance and pins the instance's host key under it; teardown releases it (it is billed
while kept). The sandbox binds the key to loopback instead (twittersnake_elastic_ip: false)."""

from __future__ import annotations

import json

import pytest

from tests.provision.test_provision import USER, Runner, recap

pytestmark = pytest.mark.slow  # provision runs against moto


def test_the_key_is_bound_to_the_instances_elastic_ip(moto_server, tmp_path):
    moto_server.reset()
    runner = Runner(moto_server.url, tmp_path)
    on = ["-e", "twittersnake_elastic_ip=true"]
    runner.run("provision", *on)
    again = runner.run("provision", *on)
    assert recap(again.stdout)["changed"] == 0, again.stdout[-3000:]

    ec2, iam = runner.client("ec2"), runner.client("iam")
    (address,) = ec2.describe_addresses()["Addresses"]
    tags = {t["Key"]: t["Value"] for t in address.get("Tags", [])}
    assert tags == {"Name": "twittersnake-collector", "Project": "twittersnake"}
    (instance,) = [
        i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]  # fmt: skip
    assert address.get("InstanceId") == instance["InstanceId"]
    (name,) = iam.list_user_policies(UserName=USER)["PolicyNames"]
    document = iam.get_user_policy(UserName=USER, PolicyName=name)["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    sources = {
        statement["Sid"]: statement["Condition"]["IpAddress"]["aws:SourceIp"]
        for statement in document["Statement"]
    }
    assert sources == dict.fromkeys(
        ["CreateObjectsUnderPrefix", "ReadObjectsUnderPrefix", "ListUnderPrefix",
         "PublishMetricsInNamespace"],
        [f"{address['PublicIp']}/32"],
    )  # fmt: skip

    runner.run("teardown", *on)
    assert ec2.describe_addresses()["Addresses"] == []
