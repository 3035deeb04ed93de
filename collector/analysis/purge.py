"""`collector purge`: rewrite the archive's raw objects without the posts X reports removed.

    python -m collector purge --config collector.toml           # dry run: objects and counts
    python -m collector purge --config collector.toml --apply   # an administrator's credentials

Report, export and the Athena view `posts_compliant` leave removed posts out at read time; the
raw objects still hold them. X's developer policy asks for their deletion, so purge reads each
raw object under `{prefix}/dt=.../hour=.../`, drops every line whose post the latest
compliance results (`{prefix}/_compliance/`, collector.analysis.compliance) call deleted,
bounced, protected or suspended, drops such a post from `includes.tweets` of the lines that
carry it (a reply, quote or repost of it: the line stays, without that include), removes the
geotag (`geo`) of scrub_geo posts, and
writes the object again under the same key, in the same codec. On the versioned bucket the
previous bytes become a noncurrent version, which the bucket's lifecycle rule expires after
`bucket_noncurrent_expire_days` (docs/operations.md says how to delete them at once).

The collector's own key may not overwrite (its PutObject needs If-None-Match): purge needs
credentials that may, and says so in one line when S3 refuses (exit 77, EX_NOPERM).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from collector.analysis import compliance
from collector.errors import EX_NOPERM


@dataclass
class Affected:
    key: str
    lines: int
    removed: int
    geo: int
    includes: int = 0  # removed posts dropped from includes.tweets of lines that stay


def latest_reasons(s3_client, bucket: str, prefix: str) -> dict[str, str]:
    """Post id -> the reason of its latest compliance result (by checked_at)."""
    latest: dict[str, tuple[str, str]] = {}
    for key, _ in compliance.list_results(s3_client, bucket, prefix):
        body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
        for line in body.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            stamp = row.get("checked_at") or ""
            if str(row.get("id")) not in latest or stamp >= latest[str(row["id"])][0]:
                latest[str(row["id"])] = (stamp, row.get("reason") or "")
    return {post_id: reason for post_id, (_, reason) in latest.items()}


def raw_objects(s3_client, bucket: str, prefix: str) -> list[str]:
    """Every post object under the prefix (`dt=` partitions; not _events/ or _compliance/)."""
    from collector.sink.codecs import DATA_SUFFIXES
    from collector.spool.layout import prefix_path

    root = prefix_path(prefix)
    keys = []
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{root}dt="):
        for item in page.get("Contents", []):
            if item["Key"].endswith(DATA_SUFFIXES):
                keys.append(item["Key"])
    return keys


def rewrite(body: bytes, key: str, reasons: dict[str, str]) -> tuple[bytes | None, Affected]:
    """The object without removed posts and with scrub_geo geotags removed (None: unchanged).

    A line whose post (`data`) was removed is dropped; a removed post another line carries in
    `includes.tweets` (the post it replies to, quotes or reposts) is dropped from there, the
    line stays; a scrub_geo post loses `geo` (and the line's `includes.places` when it is the
    line's own post)."""
    from collector.sink.codecs import codec_of

    affected = Affected(key, 0, 0, 0)
    kept = []
    for line in compliance._lines(io.BytesIO(body), key):
        if not line.strip():
            continue
        affected.lines += 1
        ids = compliance.ids_in_lines([line])
        if not any(reasons.get(post_id) for post_id in ids):
            kept.append(line)
            continue
        message = json.loads(line)
        data = message.get("data") or {}
        reason = reasons.get(str(data.get("id")))
        if reason in compliance.REMOVED_REASONS:
            affected.removed += 1
            continue
        changed = False
        if reason in compliance.GEO_REASONS and data.pop("geo", None) is not None:
            affected.geo += 1
            message.get("includes", {}).pop("places", None)
            changed = True
        included = message.get("includes", {}).get("tweets") or []
        staying = []
        for post in included:
            included_reason = reasons.get(str(post.get("id")))
            if included_reason in compliance.REMOVED_REASONS:
                affected.includes += 1
                changed = True
                continue
            if included_reason in compliance.GEO_REASONS and post.pop("geo", None) is not None:
                affected.geo += 1
                changed = True
            staying.append(post)
        if included:
            message["includes"]["tweets"] = staying
        if changed:
            line = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        kept.append(line)
    if not (affected.removed or affected.geo or affected.includes):
        return None, affected
    codec = codec_of(key)
    out = io.BytesIO()
    with codec.writer(out, codec.clamp(1)) as sink:
        sink.write(b"".join(line + b"\n" for line in kept))
    return out.getvalue(), affected


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="the collector's TOML config")
    parser.add_argument(
        "--apply", action="store_true", help="rewrite the objects (default: a dry run)"
    )


def _code(error) -> str:
    return getattr(error, "response", {}).get("Error", {}).get("Code", "") or type(error).__name__


def run(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    from collector.analysis import options
    from collector.errors import EX_CONFIG
    from collector.sink.codecs import codec_of

    try:
        source = options.read_source(args.config)
    except ValueError as error:
        print(f"collector: error: {error}", file=sys.stderr)
        return EX_CONFIG
    s3 = options._s3_client(source)
    bucket = source.bucket
    try:
        reasons = latest_reasons(s3, bucket, source.prefix)
        keys = raw_objects(s3, bucket, source.prefix) if reasons else []
    except (BotoCoreError, ClientError) as error:
        return _refused(error, f"s3://{bucket}/{source.prefix}", "read")
    if not reasons:
        print(
            f"nothing to purge: no compliance result under {options.compliance_url(source)} "
            "(run `collector compliance` first)"
        )
        return 0
    totals = Affected("", 0, 0, 0)
    objects = 0
    verb = "rewrote" if args.apply else "would rewrite"
    for key in keys:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            new_body, affected = rewrite(body, key, reasons)
            if new_body is not None and args.apply:
                s3.put_object(
                    Bucket=bucket, Key=key, Body=new_body, ContentType=codec_of(key).content_type
                )
        except (BotoCoreError, ClientError) as error:
            return _refused(error, f"s3://{bucket}/{key}", "rewrite" if args.apply else "read")
        if new_body is None:
            continue
        objects += 1
        totals.removed += affected.removed
        totals.geo += affected.geo
        totals.includes += affected.includes
        print(
            f"{verb} s3://{bucket}/{key}: {affected.removed} of {affected.lines} posts removed, "
            f"{affected.includes} removed posts dropped from includes.tweets, "
            f"{affected.geo} geotags scrubbed"
        )
    summary = (
        f"{objects} of {len(keys)} objects {'rewritten' if args.apply else 'to rewrite'}: "
        f"{totals.removed} posts removed, {totals.includes} removed posts dropped from "
        f"includes.tweets, {totals.geo} geotags scrubbed"
    )
    if args.apply:
        summary += (
            "; the previous versions are noncurrent and expire after "
            "bucket_noncurrent_expire_days (docs/operations.md: deleting them now)"
        )
    else:
        summary += " (dry run: --apply rewrites them)"
    print(summary)
    return 0


def _refused(error, where: str, what: str) -> int:
    code = _code(error)
    if code in ("AccessDenied", "403", "Forbidden"):
        print(
            f"collector: error: {where}: S3 refused to {what} ({code}): purge needs credentials "
            "that may read and overwrite the raw objects (an administrator's; the collector's "
            "key may only create)",
            file=sys.stderr,
        )
        return EX_NOPERM
    print(f"collector: error: {where}: {str(error).splitlines()[0]}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="collector purge", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
