"""Provisioning options against moto: SSE-KMS, versioning and the IA transition,
world-open SSH by explicit opt-in, the vault-encrypted credentials file, the day-2 inventory."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.provision.test_provision import BUCKET, USER, Runner, footprint, recap

# Every test here reads a footprint built by two or three ansible-playbook runs against moto.
pytestmark = pytest.mark.slow

INSTANCE = "twittersnake-collector"
VAULT_PASSWORD = "correct horse battery staple"


def policy_statements(runner: Runner) -> list[dict]:
    iam = runner.client("iam")
    (name,) = iam.list_user_policies(UserName=USER)["PolicyNames"]
    doc = iam.get_user_policy(UserName=USER, PolicyName=name)["PolicyDocument"]
    return (json.loads(doc) if isinstance(doc, str) else doc)["Statement"]


@pytest.fixture(scope="module")
def options_footprint(moto_server, tmp_path_factory):
    """One footprint, every bucket option on, SSH open to the world by opt-in: fresh run, re-run."""
    moto_server.reset()
    runner = Runner(moto_server.url, tmp_path_factory.mktemp("options"))
    key_arn = runner.client("kms").create_key(Description="twittersnake bucket key")["KeyMetadata"][
        "Arn"
    ]
    options = {
        "bucket_encryption": "aws:kms",
        "bucket_encryption_key_id": key_arn,
        "bucket_versioning": True,
        "bucket_transition_ia_days": 30,
        "network_admin_cidrs": ["0.0.0.0/0"],
        "network_allow_world_ssh": True,
    }
    runs = [runner.run("provision", "-e", json.dumps(options)) for _ in range(2)]
    return runner, key_arn, runs


def test_bucket_uses_the_kms_key_versioning_and_ia_transition(options_footprint):
    runner, key_arn, runs = options_footprint
    assert recap(runs[0].stdout)["changed"] > 0
    s3 = runner.client("s3")

    (rule,) = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    default = rule["ApplyServerSideEncryptionByDefault"]
    assert default == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    assert s3.get_bucket_versioning(Bucket=BUCKET).get("Status") == "Enabled"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert set(rules) == {"twittersnake-transition-ia", "twittersnake-expire-noncurrent"}
    assert all(rule["Status"] == "Enabled" for rule in rules.values())
    assert rules["twittersnake-transition-ia"]["Transitions"] == [
        {"Days": 30, "StorageClass": "STANDARD_IA"}
    ]
    assert rules["twittersnake-expire-noncurrent"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": 30
    }


def test_collector_may_generate_data_keys_with_the_bucket_key(options_footprint):
    runner, key_arn, _ = options_footprint
    kms = [s for s in policy_statements(runner) if any(a.startswith("kms:") for a in s["Action"])]
    assert kms == [
        {
            "Sid": "EncryptWithBucketKey",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey"],
            "Resource": key_arn,
        }
    ]


def test_rerun_with_options_changes_nothing(options_footprint):
    runner, _, runs = options_footprint
    assert recap(runs[1].stdout)["changed"] == 0 and recap(runs[1].stdout)["failed"] == 0
    assert len(footprint(runner)["instances"]) == 1


def test_world_ssh_opt_in_opens_port_22_and_nothing_else(options_footprint):
    runner, _, _ = options_footprint
    (group,) = footprint(runner)["groups"]
    (perm,) = group["IpPermissions"]
    assert (perm["IpProtocol"], perm["FromPort"], perm["ToPort"]) == ("tcp", 22, 22)
    assert [r["CidrIp"] for r in perm["IpRanges"]] == ["0.0.0.0/0"]
    assert not perm.get("Ipv6Ranges")


def test_day2_inventory_lists_the_running_collector(options_footprint):
    runner, _, _ = options_footprint
    ec2 = runner.client("ec2")
    (inst,) = footprint(runner)["instances"]
    # Decoys the inventory's filters must drop: another project's host, a terminated one of ours.
    decoys = [
        ec2.run_instances(
            ImageId=inst["ImageId"],
            MinCount=1,
            MaxCount=1,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}, *tags]}
            ],
        )["Instances"][0]["InstanceId"]
        for name, tags in (
            ("other-project-host", [{"Key": "Project", "Value": "other"}]),
            ("twittersnake-old", [{"Key": "Project", "Value": "twittersnake"}]),
        )
    ]
    ec2.terminate_instances(InstanceIds=decoys[1:])
    try:
        proc = subprocess.run(
            [
                str(REPO / ".venv/bin/ansible-inventory"),
                "-i",
                "inventory/aws/aws_ec2.yml",
                "--list",
            ],
            cwd=REPO,
            env={**runner.env, "AWS_ENDPOINT_URL": runner.url, "AWS_REGION": "us-east-1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        ec2.terminate_instances(InstanceIds=decoys[:1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    # A source the plugin cannot read is only a warning: rc stays 0, the inventory comes back empty.
    assert "Failed to parse" not in proc.stderr, proc.stderr[-3000:]
    inventory = json.loads(proc.stdout)
    assert inventory["collectors"]["hosts"] == [INSTANCE]
    assert set(inventory["_meta"]["hostvars"]) == {INSTANCE}
    # --list wraps values that came from AWS as {"__ansible_unsafe": value}.
    hostvars = {
        k: v["__ansible_unsafe"] if isinstance(v, dict) and "__ansible_unsafe" in v else v
        for k, v in inventory["_meta"]["hostvars"][INSTANCE].items()
    }
    assert hostvars["instance_id"] == inst["InstanceId"]
    assert hostvars["ansible_host"] == inst["PublicIpAddress"]
    assert hostvars["ansible_user"] == "ubuntu"


def vault_view(path: Path, password_file: Path) -> str:
    """The decrypted text, as a user would see it with ansible-vault."""
    return subprocess.run(
        [
            str(REPO / ".venv/bin/ansible-vault"),
            "view",
            "--vault-password-file",
            str(password_file),
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


@pytest.fixture(scope="module")
def vaulted(moto_server, tmp_path_factory):
    """The AWS inventory's way to store the key, a vault-encrypted file: fresh run, re-run, -v."""
    moto_server.reset()
    tmp = tmp_path_factory.mktemp("vault")
    runner = Runner(moto_server.url, tmp)
    password_file = tmp / "vault-password"
    password_file.write_text(VAULT_PASSWORD + "\n")
    password_file.chmod(0o600)
    extra_vars = tmp / "vault-vars.yml"
    extra_vars.write_text(
        yaml.safe_dump(
            {"iam_credentials_vault": True, "vault_credentials_password": VAULT_PASSWORD}
        )
    )
    args = ["-v", "-e", f"@{extra_vars}", "--vault-password-file", str(password_file)]
    runs = [runner.run("provision", *args)]
    first_bytes = runner.creds.read_bytes()
    runs.append(runner.run("provision", *args))
    return runner, password_file, runs, first_bytes


def test_vaulted_credentials_hold_the_listed_key(vaulted):
    runner, password_file, _, _ = vaulted
    raw = runner.creds.read_text()
    assert raw.startswith("$ANSIBLE_VAULT;")
    assert "collector_aws" not in raw
    assert runner.creds.stat().st_mode & 0o777 == 0o600
    (key,) = runner.client("iam").list_access_keys(UserName=USER)["AccessKeyMetadata"]
    plain = yaml.safe_load(vault_view(runner.creds, password_file))
    assert plain["collector_aws_access_key_id"] == key["AccessKeyId"]
    assert re.fullmatch(r"\S{20,}", plain["collector_aws_secret_access_key"])


def test_vaulted_rerun_reads_the_key_back_and_never_prints_the_secret(vaulted):
    runner, password_file, runs, first_bytes = vaulted
    assert recap(runs[1].stdout)["changed"] == 0 and recap(runs[1].stdout)["failed"] == 0
    # Re-encrypting would change the salt: identical bytes mean the re-run only read the file.
    assert runner.creds.read_bytes() == first_bytes
    assert len(runner.client("iam").list_access_keys(UserName=USER)["AccessKeyMetadata"]) == 1
    secret = yaml.safe_load(vault_view(runner.creds, password_file))[
        "collector_aws_secret_access_key"
    ]
    for run in runs:
        assert secret not in run.stdout + run.stderr
        assert VAULT_PASSWORD not in run.stdout + run.stderr
