"""The optional athena provisioning role: Glue database + table in moto, check-mode rhythm."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess

import boto3
import pytest

from collector.analysis import loader
from tests.conftest import REPO

PLAY = f"""
- name: Athena table only
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {REPO}/playbooks/vars/aws.yml
  module_defaults:
    twittersnake_glue_table: "{{{{ aws_connection }}}}"
  roles:
    - role: athena
"""


def changed(output: str) -> int:
    match = re.search(r"localhost\s*:.*changed=(\d+).*failed=(\d+)", output.split("PLAY RECAP")[-1])
    assert match and match.group(2) == "0", output[-3000:]
    return int(match.group(1))


def play(tmp_path, url: str, *extra: str) -> int:
    playbook = tmp_path / "athena.yml"
    playbook.write_text(PLAY)
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    env["ANSIBLE_ROLES_PATH"] = str(REPO / "roles")
    command = [str(REPO / ".venv/bin/ansible-playbook"), str(playbook), "-i", "localhost,"]
    command += ["-e", f"aws_endpoint_url={url}", "-e", "aws_access_key=testing"]
    command += ["-e", "aws_secret_key=testing", "-e", "twittersnake_bucket=tsbucket"]
    command += ["-e", "ansible_python_interpreter={{ ansible_playbook_python }}", *extra]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return changed(proc.stdout)


@pytest.mark.slow  # four ansible-playbook runs
def test_athena_role_creates_the_glue_table_idempotently(aws_env, tmp_path):
    assert play(tmp_path, aws_env.url, "--check") == 3  # posts, posts_compliance, the view
    assert play(tmp_path, aws_env.url) == 3
    assert play(tmp_path, aws_env.url, "--check") == 0
    assert play(tmp_path, aws_env.url) == 0

    glue = boto3.client("glue", endpoint_url=aws_env.url, region_name="us-east-1")
    table = glue.get_table(DatabaseName="twittersnake", Name="posts")["Table"]
    assert [k["Name"] for k in table["PartitionKeys"]] == ["dt", "hour"]
    storage = table["StorageDescriptor"]
    assert storage["Location"] == "s3://tsbucket/raw/"
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    params = table["Parameters"]
    assert params["projection.enabled"] == "true"
    assert params["storage.location.template"] == "s3://tsbucket/raw/dt=${dt}/hour=${hour}/"

    # The Glue columns are the DDL's (collector/analysis/sql/athena_table.sql), whitespace aside.
    ddl = re.sub(r"\s+", "", (loader.SQL_DIR / "athena_table.sql").read_text())
    for column in storage["Columns"]:
        assert f"{column['Name']}{column['Type']}".replace(":", "") in ddl.replace(":", "")


def test_athena_role_updates_a_changed_table(aws_env, tmp_path):
    play(tmp_path, aws_env.url)
    # both tables project dt from that day; the view is unchanged
    assert play(tmp_path, aws_env.url, "-e", "athena_dt_start=2025-06-01") == 2
    glue = boto3.client("glue", endpoint_url=aws_env.url, region_name="us-east-1")
    for name in ("posts", "posts_compliance"):
        table = glue.get_table(DatabaseName="twittersnake", Name=name)["Table"]
        assert table["Parameters"]["projection.dt.range"] == "2025-06-01,NOW"


def test_athena_role_creates_the_compliance_table_and_the_posts_compliant_view(aws_env, tmp_path):
    play(tmp_path, aws_env.url)
    glue = boto3.client("glue", endpoint_url=aws_env.url, region_name="us-east-1")
    results = glue.get_table(DatabaseName="twittersnake", Name="posts_compliance")["Table"]
    assert [k["Name"] for k in results["PartitionKeys"]] == ["dt"]
    assert results["StorageDescriptor"]["Location"] == "s3://tsbucket/raw/_compliance/"
    assert results["Parameters"]["storage.location.template"] == (
        "s3://tsbucket/raw/_compliance/dt=${dt}/"
    )
    ddl = re.sub(r"\s+", " ", (loader.SQL_DIR / "athena_compliance_table.sql").read_text())
    for column in results["StorageDescriptor"]["Columns"]:
        assert re.search(rf"[(,] {column['Name']} {column['Type']} ?[,)]", ddl), column

    view = glue.get_table(DatabaseName="twittersnake", Name="posts_compliant")["Table"]
    assert view["TableType"] == "VIRTUAL_VIEW" and view["Parameters"]["presto_view"] == "true"
    encoded = re.fullmatch(r"/\* Presto View: (\S+) \*/", view["ViewOriginalText"])[1]
    definition = json.loads(base64.b64decode(encoded))
    assert definition["catalog"] == "awsdatacatalog" and definition["schema"] == "twittersnake"
    # The SELECT of collector/analysis/sql/posts_compliant.sql, as Athena's console stores it.
    source = (loader.SQL_DIR / "posts_compliant.sql").read_text()
    assert definition["originalSql"] == source.split(" AS\n", 1)[1].strip()
    columns = {c["name"]: c["type"] for c in definition["columns"]}
    assert list(columns) == ["data", "matching_rules", "dt", "hour"]
    assert columns["matching_rules"] == "array(row(tag varchar))"
    geo = "geo row(place_id varchar, coordinates row(type varchar, coordinates array(double)))"
    assert geo in columns["data"]


def test_the_view_names_the_inventory_tables(aws_env, tmp_path):
    play(tmp_path, aws_env.url, "-e", "athena_table=tweets")
    glue = boto3.client("glue", endpoint_url=aws_env.url, region_name="us-east-1")
    view = glue.get_table(DatabaseName="twittersnake", Name="tweets_compliant")["Table"]
    encoded = re.fullmatch(r"/\* Presto View: (\S+) \*/", view["ViewOriginalText"])[1]
    sql = json.loads(base64.b64decode(encoded))["originalSql"]
    assert "FROM tweets AS p" in sql and "FROM tweets_compliance" in sql
    assert not re.search(r"\bposts", sql)
