"""Provisioning: playbooks/provision.yml and teardown.yml against a moto server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import boto3
import pytest
import yaml

from tests.conftest import REPO, AccessKey, IamMoto, enforcing_moto_server

BUCKET = "twittersnake-sandbox"
USER = "twittersnake-collector"
TOKEN = "sandbox-token"


def recap(output: str) -> dict[str, int]:
    match = re.search(r"localhost\s*:\s*(.*)", output.split("PLAY RECAP")[-1])
    assert match, output[-2000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


class Runner:
    """Runs playbooks against one moto server with a throwaway key and credentials file."""

    def __init__(self, url: str, tmp: Path, key: AccessKey | None = None) -> None:
        self.url = url
        self.tmp = tmp
        # A moto that enforces IAM needs a key it issued (the administrator's); others take any.
        self.key = key or AccessKey("any", "testing", "testing")
        self.key_vars = tmp / "aws-key.json"
        key_vars = {
            "aws_access_key": self.key.access_key_id,
            "aws_secret_key": self.key.secret_access_key,
        }
        self.key_vars.write_text(json.dumps(key_vars))
        self.creds = tmp / "creds" / "collector.yml"
        key = tmp / "id_ed25519"
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True
            )
        self.pubkey = f"{key}.pub"
        self.env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_NOCOLOR": "1",
            "AWS_ACCESS_KEY_ID": self.key.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.key.secret_access_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.env.pop("AWS_PROFILE", None)

    def run(self, playbook: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [
            str(REPO / ".venv/bin/ansible-playbook"),
            f"playbooks/{playbook}.yml",
            "-i",
            "inventory/sandbox",
            "-e",
            f"aws_endpoint_url={self.url}",
            "-e",
            f"keypair_public_key_file={self.pubkey}",
            "-e",
            f"twittersnake_credentials_file={self.creds}",
            # The sandbox inventory turns the TLS-only policy off (plain-HTTP moto); AWS keeps it.
            "-e",
            "bucket_require_tls=true",
            "-e",
            f"@{self.key_vars}",
            *extra,
        ]
        proc = subprocess.run(
            cmd, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=600
        )
        if check:
            assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        return proc

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=self.key.access_key_id,
            aws_secret_access_key=self.key.secret_access_key,
        )


def footprint(runner: Runner) -> dict[str, list]:
    ec2, iam, s3 = runner.client("ec2"), runner.client("iam"), runner.client("s3")
    instances = [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    groups = [
        g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
    ]
    return {
        "instances": instances,
        "groups": groups,
        "keys": ec2.describe_key_pairs()["KeyPairs"],
        "users": iam.list_users()["Users"],
        "buckets": s3.list_buckets()["Buckets"],
    }


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    """One footprint for the read-only tests: fresh run (-v), two re-runs, --check --diff, on a
    moto of its own that enforces IAM (the playbooks sign as its administrator, as on AWS)."""
    server = enforcing_moto_server()
    server.start()
    try:
        admin = IamMoto(server).reset()
        runner = Runner(server.url, tmp_path_factory.mktemp("provision"), key=admin)
        runs, times = [], []
        for args in (["-v"], [], [], ["--check", "--diff"]):
            start = time.monotonic()
            runs.append(runner.run("provision", *args))
            times.append(time.monotonic() - start)
        print(
            f"\nprovision timings: fresh {times[0]:.1f}s, no-op {times[1]:.1f}s / {times[2]:.1f}s,"
            f" check {times[3]:.1f}s"
        )
        yield runner, runs, times
    finally:
        server.stop()


@pytest.mark.slow  # four ansible-playbook runs against moto (the fixture)
def test_fresh_provision_creates_the_footprint(provisioned):
    runner, runs, _ = provisioned
    assert recap(runs[0].stdout)["changed"] > 0
    s3, iam, ec2 = runner.client("s3"), runner.client("iam"), runner.client("ec2")

    pab = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(pab.values()) and len(pab) == 4
    rule = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    ownership = s3.get_bucket_ownership_controls(Bucket=BUCKET)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    policy = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    statements = {statement["Sid"]: statement for statement in policy["Statement"]}
    assert set(statements) == {"DenyInsecureTransport", "DenyTlsBelow12", "DenyCollectorOverwrites"}
    assert all(statement["Effect"] == "Deny" for statement in statements.values())
    assert statements["DenyInsecureTransport"]["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }
    assert statements["DenyTlsBelow12"]["Condition"] == {
        "NumericLessThan": {"s3:TlsVersion": "1.2"}
    }
    # moto evaluates the policy: a plain-HTTP write to the bucket is refused.
    with pytest.raises(s3.exceptions.ClientError, match="Forbidden|AccessDenied"):
        s3.put_object(Bucket=BUCKET, Key="raw/plain-http.jsonl", Body=b"{}\n")

    assert iam.list_attached_user_policies(UserName=USER)["AttachedPolicies"] == []
    (name,) = iam.list_user_policies(UserName=USER)["PolicyNames"]
    doc = iam.get_user_policy(UserName=USER, PolicyName=name)["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    actions = {a for s in doc["Statement"] for a in s["Action"]}
    resources = {s["Resource"] for s in doc["Statement"]}
    # What the collector calls: PutObject, HeadObject (GetObject), ListObjectsV2 (ListBucket),
    # PutMetricData; tests/provision/test_least_privilege.py proves the scopes on an enforcing moto.
    assert actions == {"s3:PutObject", "s3:GetObject", "s3:ListBucket", "cloudwatch:PutMetricData"}
    assert resources == {f"arn:aws:s3:::{BUCKET}/raw/*", f"arn:aws:s3:::{BUCKET}", "*"}
    # Versioning is on by default, noncurrent versions expire after 30 days.
    assert s3.get_bucket_versioning(Bucket=BUCKET).get("Status") == "Enabled"
    (lifecycle,) = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert lifecycle["NoncurrentVersionExpiration"]["NoncurrentDays"] == 30
    (key,) = iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]
    assert runner.creds.stat().st_mode & 0o777 == 0o600
    assert f"collector_aws_access_key_id: {key['AccessKeyId']}" in runner.creds.read_text()

    fp = footprint(runner)
    (group,) = fp["groups"]
    (perm,) = group["IpPermissions"]
    assert (perm["IpProtocol"], perm["FromPort"], perm["ToPort"]) == ("tcp", 22, 22)
    assert [r["CidrIp"] for r in perm["IpRanges"]] == ["127.0.0.1/32"] and not perm.get(
        "Ipv6Ranges"
    )
    assert [k["KeyName"] for k in fp["keys"]] == ["twittersnake-admin"]

    (inst,) = fp["instances"]
    assert inst["InstanceType"] == "t3.micro"
    assert inst["MetadataOptions"]["HttpTokens"] == "required"
    assert [g["GroupName"] for g in inst["SecurityGroups"]] == [group["GroupName"]]
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags == {"Name": "twittersnake-collector", "Project": "twittersnake"}
    vol_id = inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    (vol,) = ec2.describe_volumes(VolumeIds=[vol_id])["Volumes"]
    assert vol["Encrypted"] and vol["VolumeType"] == "gp3"


@pytest.mark.slow  # four ansible-playbook runs against moto (the fixture)
def test_reruns_and_check_mode_change_nothing(provisioned):
    runner, runs, _ = provisioned
    for run in runs[1:]:
        assert recap(run.stdout)["changed"] == 0 and recap(run.stdout)["failed"] == 0
    assert len(footprint(runner)["instances"]) == 1
    assert len(runner.client("iam").list_access_keys(UserName=USER)["AccessKeyMetadata"]) == 1


@pytest.mark.slow  # four ansible-playbook runs against moto (the fixture)
def test_without_alerts_email_no_topic_and_no_alarm_exist(provisioned):
    runner, _, _ = provisioned
    assert runner.client("sns").list_topics()["Topics"] == []
    assert runner.client("cloudwatch").describe_alarms()["MetricAlarms"] == []


@pytest.mark.slow  # four ansible-playbook runs against moto (the fixture)
def test_verbose_output_never_shows_secrets(provisioned):
    runner, runs, _ = provisioned
    secret = re.search(r"collector_aws_secret_access_key: (\S+)", runner.creds.read_text()).group(1)
    for run in runs:
        assert secret not in run.stdout + run.stderr
        assert runner.key.secret_access_key not in run.stdout + run.stderr
        assert TOKEN not in run.stdout + run.stderr


@pytest.mark.slow  # six ansible-playbook runs against moto
def test_lost_secret_stops_and_rotation_leaves_one_key(moto_server, tmp_path):
    moto_server.reset()
    runner = Runner(moto_server.url, tmp_path)
    runner.run("provision")
    iam = runner.client("iam")
    (old,) = iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]
    runner.creds.unlink()
    failed = runner.run("provision", check=False)
    assert failed.returncode != 0 and "rotate_access_key=true" in failed.stdout
    runner.run("provision", "-e", "rotate_access_key=true")
    (new,) = iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]
    assert new["AccessKeyId"] != old["AccessKeyId"]
    assert new["AccessKeyId"] in runner.creds.read_text()

    runner.run("teardown")
    fp = footprint(runner)
    assert [b["Name"] for b in fp.pop("buckets")] == [BUCKET]
    assert all(not v for v in fp.values()), fp
    assert recap(runner.run("teardown").stdout)["changed"] == 0
    runner.run("teardown", "-e", "destroy_bucket=true")
    assert footprint(runner)["buckets"] == []


def preflight_problems(output: str) -> list[str]:
    """The lines of the preflight's one failure message (a YAML list under `msg:`)."""
    task = output.split("TASK [preflight : Stop on invalid inputs]", 1)
    assert len(task) == 2, output[-3000:]
    failure = re.search(r"FAILED! =>(.*?)(?:\n\S|\Z)", task[1], re.S)
    assert failure, task[1][:3000]
    # `msg:` holds one item per problem; a long item is folded onto more indented lines.
    body = yaml.safe_load(failure.group(1))
    return body["msg"]


# Every rule the preflight checks, broken at once: one run, every message, nothing created.
# A second run breaks the other side of the rules one value cannot break twice (an empty CIDR
# list cannot also open SSH to the world; a bucket, a rule list, one way at a time).
BAD_INPUTS = {
    "network_admin_cidrs": ["0.0.0.0/0", "203.0.113.7"],
    "twittersnake_bucket": "Bad_Bucket",
    "twittersnake_prefix": "tweets//raw",
    "collector_x_rules": [{"value": "a", "tag": "x"}, {"value": "a", "tag": "y"}],
    "aws_region": "mars-north-1",
    "vault_x_bearer_token": "",
    "iam_credentials_vault": True,
    "vault_credentials_password": "",
    "keypair_public_key_file": "/nonexistent/id_ed25519.pub",
    "keypair_create_missing": False,  # the sandbox inventory turns it on
}
PREFLIGHT_MESSAGES = [
    "network_admin_cidrs has invalid CIDRs: 203.0.113.7",
    "network_admin_cidrs opens SSH to the world (0.0.0.0/0 or ::/0)",
    "twittersnake_bucket may hold only lowercase",
    "twittersnake_prefix must not contain an empty",
    "'collector_x_rules[0]' and 'collector_x_rules[1]' have the same value 'a'",
    'aws_region "mars-north-1" is not a known AWS region',
    "vault_x_bearer_token is missing",
    "iam_credentials_vault is true but vault_credentials_password is empty",
    "keypair_public_key_file /nonexistent/id_ed25519.pub does not exist",
]
OTHER_BAD_INPUTS = {
    "network_admin_cidrs": [],
    "twittersnake_bucket": "s3://bucket",
    "collector_x_rules": [],
}
OTHER_PREFLIGHT_MESSAGES = [
    "network_admin_cidrs is empty",
    "twittersnake_bucket must be a bare bucket name",
    "'collector_x_rules' is empty",
]
# Typos that opened SSH to everyone with a loose check: a /0 after a host address (host bits
# set), IPv6's world spelled 0::/0, the world in two /1 halves, a /4.
WORLD_IN_DISGUISE = {"network_admin_cidrs": ["203.0.113.7/0", "0::/0", "0.0.0.0/1", "128.0.0.0/1"]}
WORLD_IN_DISGUISE_MESSAGES = [
    "network_admin_cidrs entry '203.0.113.7/0' has host bits set: it means 0.0.0.0/0 "
    "(4294967296 addresses); for one address write 203.0.113.7/32",
    "network_admin_cidrs opens SSH to the world (0.0.0.0/0 or ::/0): ::/0, 0.0.0.0/1, "
    "128.0.0.0/1 (wider than /8 IPv4 or /32 IPv6 counts as the world)",
]


@pytest.mark.parametrize(
    ("extra", "messages"),
    [
        (BAD_INPUTS, PREFLIGHT_MESSAGES),
        (OTHER_BAD_INPUTS, OTHER_PREFLIGHT_MESSAGES),
        (WORLD_IN_DISGUISE, WORLD_IN_DISGUISE_MESSAGES),
    ],
    ids=["every-rule-broken", "the-other-way", "the-world-in-disguise"],
)
def test_bad_inputs_fail_in_preflight_with_every_problem_and_touch_nothing(
    moto_server, tmp_path, extra, messages
):
    moto_server.reset()
    runner = Runner(moto_server.url, tmp_path)
    proc = runner.run("provision", "-e", json.dumps(extra), check=False)
    assert proc.returncode != 0
    problems = preflight_problems(proc.stdout)
    # One line per problem, each naming its key; no problem left out, none reported twice.
    assert len(problems) == len(messages), problems
    for message in messages:
        assert sum(message in problem for problem in problems) == 1, (message, problems)
    assert all("\n" not in problem for problem in problems)
    assert all(not v for v in footprint(runner).values())


@pytest.mark.slow  # a whole provision run against moto
@pytest.mark.slow  # two provision runs against moto
def test_sandbox_inventory_provisions_unattended_on_a_fresh_checkout(moto_server, tmp_path):
    """The command of docs/deploy.md, in a copy of the tracked files: no key, no .sandbox/,
    no stdin."""
    moto_server.reset()
    checkout = tmp_path / "checkout"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, tracked):
        if (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            (checkout / name).write_bytes((REPO / name).read_bytes())
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(ANSIBLE_CONFIG=str(checkout / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    command = [str(REPO / ".venv/bin/ansible-playbook"), "playbooks/provision.yml"]
    command += ["-i", "inventory/sandbox", "-e", f"aws_endpoint_url={moto_server.url}"]

    def provision() -> subprocess.CompletedProcess:
        return subprocess.run(
            command,
            cwd=checkout,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    first = provision()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    key = checkout / ".sandbox/ssh/id_ed25519"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    ec2 = boto3.client(
        "ec2",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    (pair,) = ec2.describe_key_pairs(IncludePublicKey=True)["KeyPairs"]
    assert pair["PublicKey"].split()[1] == key.with_suffix(".pub").read_text().split()[1]
    again = provision()
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again.stdout)["changed"] == 0, again.stdout[-4000:]
    assert key.with_suffix(".pub").read_text().split()[1] == pair["PublicKey"].split()[1]


def test_a_key_the_endpoint_refuses_says_what_to_pass_not_only_403(moto_iam, tmp_path):
    """The sandbox command of docs/deploy.md against the sandbox's IAM-enforcing moto without
    its administrator's key: HeadBucket answers a bare 403; the run stops naming what to add."""
    runner = Runner(moto_iam.url, tmp_path)  # signs with the inventory's key "testing"
    proc = runner.run("provision", check=False)
    assert proc.returncode != 0, proc.stdout[-4000:]
    out = proc.stdout + proc.stderr
    assert f"S3 at {moto_iam.url} refused the key Ansible signs with for bucket {BUCKET}" in out
    assert "add -e @.sandbox/vars.json (its administrator's key)" in out, out[-4000:]
    assert moto_iam.client("s3").list_buckets()["Buckets"] == []


def test_inventory_aws_placeholders_are_refused_with_the_line_to_edit(moto_server, tmp_path):
    """inventory/aws as shipped (plus a vault copied from the example unedited): nothing is made."""
    moto_server.reset()
    vault = tmp_path / "vault.yml"
    vault.write_text('vault_x_bearer_token: "AAAA...your X API bearer token"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    command = [str(REPO / ".venv/bin/ansible-playbook"), "playbooks/provision.yml"]
    command += ["-i", "inventory/aws", "-e", f"aws_endpoint_url={moto_server.url}"]
    command += ["-e", f"@{vault}", "-e", '{"network_admin_cidrs": ["203.0.113.7/32"]}']
    proc = subprocess.run(
        command,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0
    output = " ".join(proc.stdout.split())  # the callback wraps long lines
    main = "inventory/aws/group_vars/all/main.yml"
    line = next(
        n
        for n, text in enumerate((REPO / main).read_text().splitlines(), 1)
        if text.startswith("twittersnake_bucket:")
    )
    assert (
        'twittersnake_bucket is still the example value "change-me-twittersnake-data": '
        f"edit {main} line {line}"
    ) in output
    assert "twittersnake_repo_url is still the example value" in output
    assert "inventory/aws/group_vars/all/deploy.yml line" in output
    assert "vault_x_bearer_token is still the example's placeholder" in output
    assert "your X API bearer token" not in proc.stdout + proc.stderr  # a secret is never shown
    assert "TASK [preflight : Stop on invalid inputs]" in proc.stdout
    runner = Runner(moto_server.url, tmp_path)
    assert all(not v for v in footprint(runner).values())
