#!/usr/bin/python
"""Ansible module: a Glue database and an external JSON table (for Athena), idempotent."""

from __future__ import annotations

DOCUMENTATION = r"""
module: twittersnake_glue_table
short_description: Ensure a Glue database and an external JSON (OpenX SerDe) table exist as given.
description:
  - Creates the database when missing; creates the table, or updates it when its columns,
    partition keys, location or parameters differ. Supports check mode.
options:
  database: {type: str, required: true, description: Glue database.}
  table: {type: str, required: true, description: Table name.}
  location: {type: str, required: true, description: s3:// location of the data.}
  columns: {type: list, elements: dict, required: true, description: "[{name, type}] (Hive types)."}
  partition_keys: {type: list, elements: str, required: true, description: Partition columns.}
  parameters: {type: dict, required: true, description: Table parameters (partition projection).}
  endpoint_url: {type: str, description: AWS endpoint (moto in tests).}
  region: {type: str, required: true, description: AWS region.}
  profile: {type: str, description: AWS profile.}
  access_key: {type: str, description: AWS access key.}
  secret_key: {type: str, description: AWS secret key.}
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402 (after DOCUMENTATION)

SERDE = "org.openx.data.jsonserde.JsonSerDe"


def table_input(params: dict) -> dict:
    return {
        "Name": params["table"],
        "TableType": "EXTERNAL_TABLE",
        "PartitionKeys": [{"Name": k, "Type": "string"} for k in params["partition_keys"]],
        "Parameters": {k: str(v) for k, v in params["parameters"].items()},
        "StorageDescriptor": {
            "Columns": [{"Name": c["name"], "Type": c["type"]} for c in params["columns"]],
            "Location": params["location"],
            "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
            "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            "SerdeInfo": {
                "SerializationLibrary": SERDE,
                "Parameters": {"ignore.malformed.json": "true"},
            },
        },
    }


def comparable(table: dict) -> dict:
    storage = table.get("StorageDescriptor", {})
    return {
        "PartitionKeys": [(k["Name"], k["Type"]) for k in table.get("PartitionKeys", [])],
        "Parameters": table.get("Parameters", {}),
        "Columns": [(c["Name"], c["Type"]) for c in storage.get("Columns", [])],
        "Location": storage.get("Location"),
        "Serde": storage.get("SerdeInfo", {}).get("SerializationLibrary"),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "database": {"type": "str", "required": True},
            "table": {"type": "str", "required": True},
            "location": {"type": "str", "required": True},
            "columns": {"type": "list", "elements": "dict", "required": True},
            "partition_keys": {"type": "list", "elements": "str", "required": True},
            "parameters": {"type": "dict", "required": True},
            "endpoint_url": {"type": "str"},
            "region": {"type": "str", "required": True},
            "profile": {"type": "str"},
            "access_key": {"type": "str", "no_log": True},
            "secret_key": {"type": "str", "no_log": True},
        },
        supports_check_mode=True,
    )
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        module.fail_json(msg="boto3 is required on the controller")
    params = module.params
    session = boto3.Session(
        profile_name=params["profile"],
        aws_access_key_id=params["access_key"],
        aws_secret_access_key=params["secret_key"],
        region_name=params["region"],
    )
    glue = session.client("glue", endpoint_url=params["endpoint_url"] or None)
    wanted = table_input(params)
    changes = []
    try:
        try:
            glue.get_database(Name=params["database"])
        except glue.exceptions.EntityNotFoundException:
            changes.append("database")
            if not module.check_mode:
                glue.create_database(DatabaseInput={"Name": params["database"]})
        try:
            current = glue.get_table(DatabaseName=params["database"], Name=params["table"])
            if comparable(current["Table"]) != comparable(wanted):
                changes.append("table updated")
                if not module.check_mode:
                    glue.update_table(DatabaseName=params["database"], TableInput=wanted)
        except glue.exceptions.EntityNotFoundException:
            changes.append("table created")
            if not module.check_mode:
                glue.create_table(DatabaseName=params["database"], TableInput=wanted)
    except (BotoCoreError, ClientError) as error:
        module.fail_json(msg=f"Glue {params['database']}.{params['table']}: {error}")
    module.exit_json(changed=bool(changes), changes=changes)


if __name__ == "__main__":
    main()
