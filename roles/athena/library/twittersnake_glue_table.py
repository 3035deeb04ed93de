#!/usr/bin/python
"""Ansible module: a Glue database and an external JSON table or a view (for Athena), idempotent."""

from __future__ import annotations

DOCUMENTATION = r"""
module: twittersnake_glue_table
short_description: Ensure a Glue database and an external JSON table or an Athena view exist.
description:
  - Creates the database when missing; creates the table, or updates it when its columns,
    partition keys, location, parameters or view text differ. Supports check mode.
  - A view (view_sql given) is stored as Athena stores the views it creates in the Glue Data
    Catalog (a Presto view) - TableType VIRTUAL_VIEW, parameter presto_view, ViewOriginalText
    "/* Presto View: <base64 of JSON originalSql, catalog, schema, columns> */" - so Athena reads
    it as if CREATE VIEW had been run in its console.
options:
  database: {type: str, required: true, description: Glue database.}
  table: {type: str, required: true, description: Table or view name.}
  location: {type: str, description: s3:// location of the data (a table only).}
  columns: {type: list, elements: dict, required: true, description: "[{name, type}] (Hive types)."}
  partition_keys: {type: list, elements: str, default: [], description: Partition columns.}
  parameters: {type: dict, default: {}, description: Table parameters (partition projection).}
  view_sql: {type: str, description: "The view's SELECT (Trino SQL); makes this a view."}
  endpoint_url: {type: str, description: AWS endpoint (moto in tests).}
  region: {type: str, required: true, description: AWS region.}
  profile: {type: str, description: AWS profile.}
  access_key: {type: str, description: AWS access key.}
  secret_key: {type: str, description: AWS secret key.}
"""

import base64  # noqa: E402 (after DOCUMENTATION)
import json  # noqa: E402
import re  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

SERDE = "org.openx.data.jsonserde.JsonSerDe"
PRESTO_VIEW = "/* Presto View: {} */"
PRESTO_VIEW_EXPANDED = "/* Presto View */"
_HIVE_NAMES = {"string": "varchar", "int": "integer"}


def presto_type(hive: str) -> str:
    """A Hive type (struct<a:string>, array<double>) in Presto's spelling (row(a varchar),
    array(double)), as a Presto view's columns are written."""
    tokens = re.findall(r"[A-Za-z_][A-Za-z0-9_]*|[<>:,]", hive)
    position = 0

    def parse() -> str:
        nonlocal position
        name = tokens[position].lower()
        position += 1
        if name == "array":
            position += 1  # <
            inner = parse()
            position += 1  # >
            return f"array({inner})"
        if name == "struct":
            fields = []
            while tokens[position] != ">":
                position += 1  # < or ,
                field = tokens[position]
                position += 2  # the name and :
                fields.append(f"{field} {parse()}")
            position += 1  # >
            return f"row({', '.join(fields)})"
        return _HIVE_NAMES.get(name, name)

    return parse()


def view_input(params: dict) -> dict:
    columns = [{"name": c["name"], "type": presto_type(c["type"])} for c in params["columns"]]
    definition = {
        "originalSql": params["view_sql"],
        "catalog": "awsdatacatalog",
        "schema": params["database"],
        "columns": columns,
    }
    encoded = base64.b64encode(json.dumps(definition, sort_keys=True).encode()).decode()
    return {
        "Name": params["table"],
        "TableType": "VIRTUAL_VIEW",
        "PartitionKeys": [],
        "Parameters": {"presto_view": "true", "comment": "Presto View"},
        "ViewOriginalText": PRESTO_VIEW.format(encoded),
        "ViewExpandedText": PRESTO_VIEW_EXPANDED,
        "StorageDescriptor": {
            "Columns": [{"Name": c["name"], "Type": c["type"]} for c in params["columns"]],
            "SerdeInfo": {},
        },
    }


def table_input(params: dict) -> dict:
    if params.get("view_sql"):
        return view_input(params)
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
        "Type": table.get("TableType"),
        "View": table.get("ViewOriginalText"),
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "database": {"type": "str", "required": True},
            "table": {"type": "str", "required": True},
            "location": {"type": "str"},
            "columns": {"type": "list", "elements": "dict", "required": True},
            "partition_keys": {"type": "list", "elements": "str", "default": []},
            "parameters": {"type": "dict", "default": {}},
            "view_sql": {"type": "str"},
            "endpoint_url": {"type": "str"},
            "region": {"type": "str", "required": True},
            "profile": {"type": "str"},
            "access_key": {"type": "str", "no_log": True},
            "secret_key": {"type": "str", "no_log": True},
        },
        required_one_of=[("location", "view_sql")],
        mutually_exclusive=[("location", "view_sql")],
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
