"""Compliance and purge on the IAM-enforcing moto: the collector's key (the policy roles/iam
renders) runs `collector compliance` and is refused `collector purge --apply`; an
administrator's key purges exactly the objects holding removed posts, as new versions."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

from collector.spool.layout import data_file_name, object_key
from tests.collector_support import TOKEN, run_cli, write_config
from tests.fakes.x_server import FakeXServer
from tests.provision.test_prefix import BUCKET, render_roles


def raw_lines(body: bytes) -> list[bytes]:
    return [line for line in gzip.decompress(body).splitlines() if line.strip()]


def test_the_collector_key_checks_compliance_but_only_an_administrator_purges(
    moto_iam, tmp_path
) -> None:
    policy = render_roles(tmp_path, "tweets")["policy"]
    collector = moto_iam.create_user("twittersnake-collector", policy)
    admin_s3 = moto_iam.client("s3")
    admin_s3.create_bucket(Bucket=BUCKET)
    admin_s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    with FakeXServer(token=TOKEN) as server:
        posts = server._take_posts(60)
        now = datetime.now(UTC)
        keys = []
        for number in range(3):  # 20 posts an object
            # The collector's key layout: compliance reads no other key (loader.cache_path).
            key = object_key("tweets", data_file_name("c1", now, number) + ".gz")
            body = b"".join(line for _, line in posts[number * 20 : (number + 1) * 20])
            admin_s3.put_object(Bucket=BUCKET, Key=key, Body=gzip.compress(body))
            keys.append(key)
        ids = [post_id for post_id, _ in posts]
        server.control({"compliance_mark": {"ids": ids[:3], "reason": "deleted"}})
        server.control({"compliance_mark": {"ids": [ids[45]], "reason": "protected"}})
        config = write_config(tmp_path, server.url, s3_endpoint=moto_iam.url, bucket=BUCKET)
        as_collector = moto_iam.env(collector)
        as_admin = moto_iam.env(moto_iam.admin)

        done = run_cli("compliance", "--config", str(config), "--since", "2h",
                       "--poll-seconds", "0", "--cache-dir", str(tmp_path / "cache"),
                       env=as_collector)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "4 removed on X" in done.stdout

    refused = run_cli("purge", "--config", str(config), "--apply", env=as_collector)
    assert refused.returncode == 77, refused.stderr
    (line,) = refused.stderr.splitlines()
    assert "S3 refused to rewrite (AccessDenied): purge needs credentials" in line
    versions = admin_s3.list_object_versions(Bucket=BUCKET, Prefix="tweets/dt=")["Versions"]
    assert len(versions) == 3  # nothing was rewritten

    dry = run_cli("purge", "--config", str(config), env=as_admin)
    assert dry.returncode == 0, dry.stderr
    assert "2 of 3 objects to rewrite: 4 posts removed" in dry.stdout

    applied = run_cli("purge", "--config", str(config), "--apply", env=as_admin)
    assert applied.returncode == 0, applied.stderr
    assert "2 of 3 objects rewritten: 4 posts removed" in applied.stdout
    versions = admin_s3.list_object_versions(Bucket=BUCKET, Prefix="tweets/dt=")["Versions"]
    per_key = {key: sum(v["Key"] == key for v in versions) for key in keys}
    assert per_key == {keys[0]: 2, keys[1]: 1, keys[2]: 2}  # exactly the affected objects
    left = set()
    for key in keys:
        body = admin_s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        left |= {json.loads(line)["data"]["id"] for line in raw_lines(body)}
    assert left == set(ids) - {*ids[:3], ids[45]}
