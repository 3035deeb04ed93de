"""X's access levels and what each allows the filtered stream: the one table the collector,
`collector check`, the Ansible preflight and the X stand-in read.

    ACCESS_LEVELS["pay-per-use"].max_rules         -> 1000
    access_level("enterprise").rule_max_length     -> 2048
    access_level("pro").backfill                   -> False

Sources (X's documentation, xdevplatform/docs):
- x-api/posts/filtered-stream/introduction.mdx, "Access levels": pay-per-use 1,000 rules per
  project of up to 1,024 characters, 1 connection; Enterprise 25,000+ rules of up to 2,048
  characters, multiple connections.
- x-api/fundamentals/rate-limits.mdx: GET /2/tweets/search/stream "1 connection; 1000 rules; 1024
  rule length; 250 posts/sec".
- The same page before pay-per-use (its first version): Pro access, 1000 rules of up to 1024
  characters; legacy Pro projects may stay on it or opt into pay-per-use.
- x-api/fundamentals/recovery-and-redundancy.mdx: redundant connections (up to two on the
  filtered stream), `backfill_minutes` (0-5) and the Recovery/Replay API are Enterprise only.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ACCESS_LEVEL = "pay-per-use"


@dataclass(frozen=True)
class AccessLevel:
    """What one access level lets the filtered stream do.

    max_rules: rules per project; rule_max_length: characters per rule value; connections:
    simultaneous filtered-stream connections (a second one is refused with 429
    TooManyConnections); backfill: `backfill_minutes` (0-5) on reconnect; recovery: the Recovery
    API (start_time/end_time, last 24 h, 2 concurrent jobs); search_query_max_length: characters
    of a recent search query (512; 4,096 on Enterprise: x-api/posts/search/integrate/build-a-query).
    """

    name: str
    max_rules: int
    rule_max_length: int
    connections: int
    backfill: bool
    recovery: bool
    search_query_max_length: int = 512


ACCESS_LEVELS: dict[str, AccessLevel] = {
    level.name: level
    for level in (
        AccessLevel("pay-per-use", 1000, 1024, 1, backfill=False, recovery=False),
        AccessLevel("pro", 1000, 1024, 1, backfill=False, recovery=False),
        AccessLevel(
            "enterprise",
            25000,
            2048,
            2,
            backfill=True,
            recovery=True,
            search_query_max_length=4096,
        ),
    )
}


def access_level(name: str) -> AccessLevel:
    """The level called `name`; KeyError for a name X does not have (config.py says which)."""
    return ACCESS_LEVELS[name]
