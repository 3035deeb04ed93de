"""The notebook's read-only key, proven on a moto that enforces IAM.

provision.yml --tags bucket,iam with twittersnake_notebook_enabled makes a second IAM user and
stores its key on the controller as roles/iam stores the collector's; the tests sign as that key:
it lists and reads under the prefix (what collector.analysis.loader does for the starter notebook,
the report and the export) and is refused every write, every delete and anything outside the prefix.
Teardown removes the user, even once the notebook is turned off.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from collector.analysis import loader
from collector.spool.layout import data_file_name, object_key
from tests.conftest import AccessKey, IamMoto, enforcing_moto_server
from tests.provision.test_least_privilege import BUCKET, PREFIX, SOURCE_CIDR, provision, refused

pytestmark = pytest.mark.slow  # ansible-playbook runs against moto

COLLECTOR = "twittersnake-collector"
NOTEBOOK = "twittersnake-notebook"


@dataclass
class Reader:
    moto: IamMoto
    notebook: AccessKey
    collector_key_id: str
    statements: dict[str, dict]  # by Sid
    tmp: Path

    def s3(self):
        return self.moto.client("s3", self.notebook)


def notebook_vars(tmp: Path, enabled: bool = True) -> dict[str, object]:
    return {
        "twittersnake_notebook_enabled": enabled,
        "twittersnake_notebook_credentials_file": str(tmp / "notebook-credentials.yml"),
    }


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> Iterator[Reader]:
    """Its own enforcing moto: the bucket and both users provisioned, the objects an admin put."""
    server = enforcing_moto_server()
    server.start()
    try:
        moto = IamMoto(server)
        moto.reset()
        tmp = tmp_path_factory.mktemp("notebook-iam")
        provision(moto, tmp, **notebook_vars(tmp))
        stored = yaml.safe_load((tmp / "notebook-credentials.yml").read_text())
        notebook = AccessKey(
            NOTEBOOK, stored["notebook_aws_access_key_id"], stored["notebook_aws_secret_access_key"]
        )
        collector = yaml.safe_load((tmp / "collector-credentials.yml").read_text())
        iam = moto.client("iam")
        (name,) = iam.list_user_policies(UserName=NOTEBOOK)["PolicyNames"]
        document = iam.get_user_policy(UserName=NOTEBOOK, PolicyName=name)["PolicyDocument"]
        document = json.loads(document) if isinstance(document, str) else document
        yield Reader(
            moto,
            notebook,
            collector["collector_aws_access_key_id"],
            {s["Sid"]: s for s in document["Statement"]},
            tmp,
        )
    finally:
        server.stop()


def test_the_notebook_has_its_own_key_and_a_read_only_policy(reader):
    assert reader.notebook.access_key_id != reader.collector_key_id
    users = {u["UserName"] for u in reader.moto.client("iam").list_users()["Users"]}
    assert users == {"administrator", COLLECTOR, NOTEBOOK}
    assert {sid: (s["Action"], s["Resource"]) for sid, s in reader.statements.items()} == {
        "ReadObjectsUnderPrefix": (["s3:GetObject"], f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"),
        "ListUnderPrefix": (["s3:ListBucket"], f"arn:aws:s3:::{BUCKET}"),
    }
    assert reader.statements["ListUnderPrefix"]["Condition"] == {
        "StringLike": {"s3:prefix": [f"{PREFIX}/*"]},
        "IpAddress": {"aws:SourceIp": [SOURCE_CIDR]},
    }


def test_the_notebook_key_loads_the_period_as_the_starter_notebook_does(reader, tmp_path):
    admin = reader.moto.client("s3")
    now = datetime.now(UTC)
    key = object_key(PREFIX, data_file_name("c1", now, 1) + ".gz")
    body = gzip.compress(b'{"data": {"id": "1", "text": "hello"}}\n')
    admin.put_object(Bucket=BUCKET, Key=key, Body=body)

    period = loader.Period.last(timedelta(hours=2), now + timedelta(minutes=1))
    sync = loader.sync_cache(reader.s3(), BUCKET, PREFIX, period, tmp_path, progress=False)
    assert (sync.downloaded, sync.skipped) == (1, [])
    assert [path.read_bytes() for path in sync.paths] == [body]


def test_the_notebook_key_may_not_write_delete_or_leave_the_prefix(reader):
    admin = reader.moto.client("s3")
    mine = f"{PREFIX}/dt=2026-01-01/hour=00/c1-000009.jsonl.gz"
    admin.put_object(Bucket=BUCKET, Key=mine, Body=b"{}\n")
    admin.put_object(Bucket=BUCKET, Key="elsewhere/x.json", Body=b"{}")
    s3 = reader.s3()
    assert s3.get_object(Bucket=BUCKET, Key=mine)["Body"].read() == b"{}\n"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/dt=2026-01-01/")
    assert [o["Key"] for o in listed["Contents"]] == [mine]

    new = f"{PREFIX}/dt=2026-01-01/hour=00/c1-000010.jsonl.gz"
    for call, kwargs in (
        (s3.put_object, {"Key": new, "Body": b"{}", "IfNoneMatch": "*"}),
        (s3.put_object, {"Key": mine, "Body": b"overwritten"}),
        (s3.delete_object, {"Key": mine}),
        (s3.get_object, {"Key": "elsewhere/x.json"}),
        (s3.list_objects_v2, {}),
        (s3.list_objects_v2, {"Prefix": "elsewhere/"}),
        (s3.put_bucket_versioning, {"VersioningConfiguration": {"Status": "Suspended"}}),
    ):
        assert refused(call, Bucket=BUCKET, **kwargs) == "AccessDenied", (call, kwargs)
    answer = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": mine}]})
    assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [(mine, "AccessDenied")]
    assert admin.get_object(Bucket=BUCKET, Key=mine)["Body"].read() == b"{}\n"
    assert "Contents" not in admin.list_objects_v2(Bucket=BUCKET, Prefix=new)
    assert refused(reader.moto.client("iam", reader.notebook).list_users) == "AccessDenied"


def test_a_rerun_keeps_the_key_and_teardown_removes_the_user(reader):
    again = provision(reader.moto, reader.tmp, **notebook_vars(reader.tmp))
    assert "changed=0" in again.stdout.split("PLAY RECAP")[-1], again.stdout[-3000:]
    stored = yaml.safe_load((reader.tmp / "notebook-credentials.yml").read_text())
    assert stored["notebook_aws_access_key_id"] == reader.notebook.access_key_id

    # The notebook turned off in the inventory since: its user goes all the same.
    provision(
        reader.moto,
        reader.tmp,
        playbook="playbooks/teardown.yml",
        tags="all",
        **notebook_vars(reader.tmp, enabled=False),
    )
    users = [u["UserName"] for u in reader.moto.client("iam").list_users()["Users"]]
    assert users == ["administrator"]
    assert refused(reader.s3().list_objects_v2, Bucket=BUCKET, Prefix=f"{PREFIX}/") in (
        "InvalidAccessKeyId",
        "AccessDenied",
    )
