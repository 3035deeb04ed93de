"""The collector's TOML configuration: typed dataclasses, strict validation, one-line errors.

Field names equal the TOML keys (a contract with the deploy role and the report). Unknown keys
and wrong types are errors naming the key, so a typo fails at start instead of being ignored.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import tomllib
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.errors import ConfigError, ConfigUnreadable
from collector.sink.codecs import CODECS
from collector.source.access import ACCESS_LEVELS, DEFAULT_ACCESS_LEVEL, AccessLevel
from collector.source.fields import (
    COMPACT,
    FULL,
    PARAMETERS,
    PROFILES,
    FieldSet,
    explicit_field_set,
)
from collector.source.pricing import USD_PER_POST
from collector.spool.layout import DEFAULT_PREFIX, bucket_name_problem, normalize_prefix

DEFAULT_CONFIG = Path("/etc/twittersnake/collector.toml")
STREAMS = ("filter", "sample")
# A file spanning more than two hour partitions hides posts from `dt=`/`hour=` queries.
MAX_ROTATE_SECONDS = 3600
_COLLECTOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


TWEET_FIELDS = COMPACT.tweet_fields  # what the report and `export` read at the least


@dataclass(frozen=True)
class Rule:
    value: str
    tag: str | None = None


@dataclass(frozen=True)
class XConfig:
    api_base_url: str = "https://api.x.com"
    bearer_token_file: Path = Path("/etc/twittersnake/x_bearer_token")
    stream: str = "filter"
    # X sends only id, text and edit_history_tweet_ids unless asked
    # (https://docs.x.com/x-api/fundamentals/fields): `x.fields = "full"` (every field and
    # expansion), "compact", or the per-kind lists (x.tweet_fields, x.expansions, ...).
    fields: FieldSet = FULL
    rules: list[Rule] = field(default_factory=list)
    # The project's X access level (collector.source.access.ACCESS_LEVELS): the rule count and
    # length limits applied before X does, and what the stream may use (backfill, recovery,
    # redundant connections).
    access_level: str = DEFAULT_ACCESS_LEVEL
    # An override of the access level's rule length limit (a contract with other limits).
    rule_max_length: int | None = None
    # On X's 429 TooManyConnections, end the app's other filtered-stream connections through
    # X's Connections API (a dead earlier run X still counts); false when another client
    # streams with the same app (collector.source.connections).
    clear_stale_connections: bool = True
    # How often (s) the running collector compares X's live rules with this file (GET rules,
    # free of charge): a configured rule that is not live shows in `collector status`.
    rules_check_seconds: float = 120
    # Gap repair (collector.source.repair): "auto" fetches again, by recent search, what each
    # live rule matched while the stream was not connected; "off" leaves the gaps. The span is
    # widened by repair_margin_seconds on both sides (duplicates are expected and dropped by
    # the report and export).
    repair: str = "auto"
    repair_margin_seconds: float = 5.0

    @property
    def limits(self) -> AccessLevel:
        """The access level's limits (collector.source.access)."""
        return ACCESS_LEVELS[self.access_level]


@dataclass(frozen=True)
class SpoolConfig:
    dir: Path = Path("/var/lib/twittersnake/spool")
    # after the disk filled, writing resumes once this share of the file system is free again
    resume_free_percent: float = 2.0


@dataclass(frozen=True)
class RotateConfig:
    max_records: int = 20000
    max_bytes: int = 64 * 1024 * 1024
    max_seconds: float = 300


@dataclass(frozen=True)
class S3Config:
    bucket: str = ""
    prefix: str = DEFAULT_PREFIX  # normalized (collector.spool.layout.normalize_prefix)
    region: str = "us-east-1"
    endpoint_url: str = ""
    compression: str = "gzip"
    compression_level: int = 1
    # S3 refusing every upload this long (s) turns the health from degraded to failing.
    failing_after_seconds: float = 120
    # An AWS shared-credentials file ([default] aws_access_key_id, aws_secret_access_key) the
    # collector, `check` and CloudWatch use whoever runs them; "" = boto3's own chain.
    credentials_file: str = ""


@dataclass(frozen=True)
class CloudWatchConfig:
    """Metrics to Amazon CloudWatch (collector/telemetry/cloudwatch.py); off unless enabled."""

    enabled: bool = False
    region: str = "us-east-1"
    endpoint_url: str = ""
    interval_seconds: float = 60


ON_EXHAUSTED = ("pause", "continue")


@dataclass(frozen=True)
class BudgetConfig:
    """What the collector may spend on X (collector/telemetry/ledger.py meters it).

    posts_per_day: billable posts per UTC day (None: no daily limit).
    usd_per_month: USD per billing cycle (None: no monthly limit).
    usd_per_post: the price of one billed post (X's list price for Posts: Read).
    billing_cycle_day: the day of the month the cycle starts (00:00 UTC; a day past the end
        of a short month is its last day).
    on_exhausted: "pause" (close the stream until the day or cycle ends) or "continue"
        (meter and alarm only).
    """

    posts_per_day: int | None = None
    usd_per_month: float | None = None
    usd_per_post: float = USD_PER_POST
    billing_cycle_day: int = 1
    on_exhausted: str = "pause"

    @property
    def limited(self) -> bool:
        return self.posts_per_day is not None or self.usd_per_month is not None


@dataclass(frozen=True)
class Config:
    collector_id: str
    x: XConfig
    spool: SpoolConfig
    rotate: RotateConfig
    s3: S3Config
    path: Path | None = None
    cloudwatch: CloudWatchConfig = field(default_factory=CloudWatchConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)


# key -> (expected type, description used in messages)
_SCHEMA: dict[str, dict[str, tuple[type | tuple[type, ...], str]]] = {
    "": {"collector_id": (str, "a string")},
    "x": {
        "api_base_url": (str, "a string"),
        "bearer_token_file": (str, "a string (path)"),
        "stream": (str, "a string"),
        "fields": (str, f"one of {', '.join(map(repr, PROFILES))} (or give per-kind lists)"),
        **{kind: (list, "a list of strings") for kind in PARAMETERS},
        "rules": (list, "an array of tables ([[x.rules]])"),
        "access_level": (str, f"one of {', '.join(ACCESS_LEVELS)} (your X project's access)"),
        "rule_max_length": (int, "a positive integer (X's rule length limit for your access)"),
        "clear_stale_connections": (bool, "a boolean (true or false)"),
        "rules_check_seconds": ((int, float), "a positive number (seconds)"),
        "repair": (str, "one of auto, off (fetch again what the stream missed)"),
        "repair_margin_seconds": ((int, float), "a number of seconds >= 0"),
    },
    "spool": {
        "dir": (str, "a string (path)"),
        "resume_free_percent": ((int, float), "a number from 0 to 50 (percent of the disk)"),
    },
    "rotate": {
        "max_records": (int, "a positive integer"),
        "max_bytes": (int, "a positive integer"),
        "max_seconds": ((int, float), "a positive number"),
    },
    "s3": {
        "bucket": (str, "a string"),
        "prefix": (str, "a string"),
        "region": (str, "a string"),
        "endpoint_url": (str, "a string"),
        "compression": (str, "a string"),
        "compression_level": (int, "an integer"),
        "failing_after_seconds": ((int, float), "a positive number (seconds)"),
        "credentials_file": (str, "a string (path of an AWS shared-credentials file)"),
    },
    "cloudwatch": {
        "enabled": (bool, "a boolean (true or false)"),
        "region": (str, "a string"),
        "endpoint_url": (str, "a string"),
        "interval_seconds": ((int, float), "a positive number"),
    },
    "budget": {
        "posts_per_day": (int, "a positive integer (billable posts per UTC day)"),
        "usd_per_month": ((int, float), "a positive number (USD per billing cycle)"),
        "usd_per_post": ((int, float), "a positive number (USD per billed post, X's price)"),
        "billing_cycle_day": (int, "an integer from 1 to 31 (day of the month)"),
        "on_exhausted": (str, 'a string ("pause" or "continue")'),
    },
}
_SECTIONS = ("x", "spool", "rotate", "s3", "cloudwatch", "budget")


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def _check_section(where: str, section: str, table: dict[str, Any]) -> dict[str, Any]:
    schema = _SCHEMA[section]
    for key, value in table.items():
        name = f"{section}.{key}" if section else key
        if section == "" and key in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table, got {_type_name(value)}")
            continue
        if key not in schema:
            known = ", ".join(sorted(schema)) or "none"
            if section == "":
                known += ", " + ", ".join(f"[{name}]" for name in _SECTIONS)
            raise ConfigError(f"{where}: unknown key '{name}' (known keys: {known})")
        expected, description = schema[key]
        # bool is an int subclass in Python; a boolean is never a valid number here.
        if (expected is not bool and isinstance(value, bool)) or not isinstance(value, expected):
            raise ConfigError(f"{where}: '{name}' must be {description}, got {_type_name(value)}")
        if isinstance(value, list) and key != "rules":  # expected is list
            for item in value:
                if not isinstance(item, str):
                    raise ConfigError(
                        f"{where}: '{name}' must be a list of strings, got an item {item!r}"
                    )
    return table


def parse_rules(where: str, items: list[Any]) -> list[Rule]:
    """[[x.rules]] tables as Rules; ConfigError names the entry and key that is wrong."""
    rules = []
    for index, item in enumerate(items):
        name = f"x.rules[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: '{name}' must be a table with value and tag")
        for key in item:
            if key not in ("value", "tag"):
                raise ConfigError(f"{where}: unknown key '{name}.{key}' (known keys: tag, value)")
        value, tag = item.get("value"), item.get("tag")
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: '{name}.value' must be a non-empty string")
        if tag is not None and not isinstance(tag, str):
            raise ConfigError(f"{where}: '{name}.tag' must be a string, got {_type_name(tag)}")
        rules.append(Rule(value=value, tag=tag))
    return rules


def rules_problems(
    rules: list[Rule],
    stream: str = "filter",
    max_length: int | None = None,
    access_level: str = DEFAULT_ACCESS_LEVEL,
) -> list[str]:
    """What is wrong with a filtered stream's rules, one line each (empty when nothing is).

    X refuses a value that is already live (DuplicateRule), a value over the access level's
    length limit and rules beyond the level's count (collector.source.access); a filter stream
    with no rule gets 409 on every connection
    (https://docs.x.com/x-api/posts/filtered-stream/introduction). `max_length` (the
    x.rule_max_length override) replaces the level's length limit. The preflight role runs the
    same checks on the inventory's rules (the `twittersnake_rules_problems` filter).
    """
    problems: list[str] = []
    level = ACCESS_LEVELS[access_level]
    if max_length is None:
        max_length = level.rule_max_length
        length_source = f"X's limit for x.access_level = {level.name}"
    else:
        length_source = f"x.rule_max_length = {max_length}"
    if stream == "filter" and not rules:
        problems.append(
            "'x.rules' is empty: a filter stream needs at least one rule "
            "(X answers every connection with 409 while no rule is live)"
        )
    if len(rules) > level.max_rules:
        problems.append(
            f"'x.rules' holds {len(rules)} rules, over the {level.max_rules} X allows a project "
            f"on x.access_level = {level.name}"
        )
    first_with: dict[str, int] = {}
    for index, rule in enumerate(rules):
        if rule.value in first_with:
            problems.append(
                f"'x.rules[{first_with[rule.value]}]' and 'x.rules[{index}]' have the same value "
                f"{rule.value!r}: X refuses a duplicate rule value; merge them or change one"
            )
        else:
            first_with[rule.value] = index
        if len(rule.value) > max_length:
            problems.append(
                f"'x.rules[{index}].value' is {len(rule.value)} characters, over "
                f"{max_length} ({length_source}): shorten the rule or split it into two rules "
                "(X matches a post on any rule); if your X access allows longer rules, set "
                "x.access_level (enterprise: 2048) or x.rule_max_length"
            )
    return problems


def _positive(where: str, name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{where}: '{name}' must be positive, got {value}")


def _endpoint(where: str, name: str, url: str) -> None:
    """ "" (AWS's own endpoint) or an http(s) URL: botocore refuses anything else with a
    ValueError only when the client is made."""
    if url and not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(
            f"{where}: '{name}' must be empty (AWS) or an http:// or https:// URL, got {url!r}"
        )


def _field_set(where: str, x_table: dict[str, Any]) -> FieldSet:
    """x.fields (a profile) or the per-kind lists, taken out of `x_table`; FULL when neither."""
    profile = x_table.pop("fields", None)
    lists = {kind: x_table.pop(kind) for kind in PARAMETERS if kind in x_table}
    if profile is not None and lists:
        raise ConfigError(
            f"{where}: 'x.fields' and 'x.{next(iter(lists))}' are both set: give a profile "
            "(x.fields) or per-kind lists, not both"
        )
    if lists:
        try:
            return explicit_field_set(lists)
        except ValueError as error:
            raise ConfigError(f"{where}: {error}") from None
    if profile is None:
        return FULL
    if profile not in PROFILES:
        choices = ", ".join(map(repr, PROFILES))
        near = difflib.get_close_matches(str(profile), PROFILES, n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(
            f"{where}: 'x.fields' must be one of {choices}, got {profile!r}{hint}; or leave it "
            f"out and give per-kind lists ({', '.join(f'x.{k}' for k in PARAMETERS)})"
        )
    return PROFILES[profile]


def parse_config(data: dict[str, Any], where: str = "config", streaming: bool = True) -> Config:
    """The typed config; ConfigError names the key. streaming=False (the report) skips the rules."""
    top = _check_section(where, "", data)
    sections = {name: _check_section(where, name, top.get(name, {})) for name in _SECTIONS}
    x_table = dict(sections["x"])
    rules = parse_rules(where, x_table.pop("rules", []))
    if "bearer_token_file" in x_table:
        x_table["bearer_token_file"] = Path(x_table["bearer_token_file"])
    x_table["fields"] = _field_set(where, x_table)
    x = XConfig(**x_table, rules=rules)
    if x.access_level not in ACCESS_LEVELS:
        raise ConfigError(
            f"{where}: 'x.access_level' must be one of {', '.join(ACCESS_LEVELS)}, "
            f"got {x.access_level!r}"
        )
    if x.rule_max_length is not None:
        _positive(where, "x.rule_max_length", x.rule_max_length)
    _positive(where, "x.rules_check_seconds", x.rules_check_seconds)
    if x.repair not in ("auto", "off"):
        raise ConfigError(f"{where}: 'x.repair' must be one of auto, off, got {x.repair!r}")
    if not 0 <= x.repair_margin_seconds <= 3600:
        raise ConfigError(
            f"{where}: 'x.repair_margin_seconds' must be 0 to 3600 seconds, "
            f"got {x.repair_margin_seconds}"
        )
    if x.stream not in STREAMS:
        raise ConfigError(
            f"{where}: 'x.stream' must be one of {', '.join(STREAMS)}, got {x.stream!r}"
        )
    if not re.match(r"^https?://[^/\s]+", x.api_base_url):
        raise ConfigError(
            f"{where}: 'x.api_base_url' must be an http:// or https:// URL, got {x.api_base_url!r}"
        )
    if x.api_base_url.startswith("http://") and not is_loopback_url(x.api_base_url):
        raise ConfigError(
            f"{where}: 'x.api_base_url' must be an https:// URL (over http:// the bearer token "
            "crosses the network in clear text); http:// is for a loopback host only "
            f"(127.0.0.1, ::1, localhost), got {x.api_base_url!r}"
        )
    problems = rules_problems(x.rules, x.stream, x.rule_max_length, x.access_level)
    for problem in problems if streaming else []:
        raise ConfigError(f"{where}: {problem}")
    spool_table = dict(sections["spool"])
    if "dir" in spool_table:
        spool_table["dir"] = Path(spool_table["dir"])
    resume = spool_table.get("resume_free_percent", SpoolConfig.resume_free_percent)
    if not 0 <= resume <= 50:
        raise ConfigError(
            f"{where}: 'spool.resume_free_percent' must be a number from 0 to 50 (percent of the"
            f" spool's file system free before writing resumes after a full disk), got {resume}"
        )
    rotate = RotateConfig(**sections["rotate"])
    for name in ("max_records", "max_bytes", "max_seconds"):
        _positive(where, f"rotate.{name}", getattr(rotate, name))
    if rotate.max_seconds > MAX_ROTATE_SECONDS:
        raise ConfigError(
            f"{where}: 'rotate.max_seconds' must be at most {MAX_ROTATE_SECONDS} (one hour), "
            f"got {rotate.max_seconds}: a longer file spans more than two hour partitions "
            "and dt=/hour= queries miss its posts"
        )
    s3_table = dict(sections["s3"])
    bucket_problem = bucket_name_problem(s3_table.get("bucket", ""))
    if bucket_problem:
        raise ConfigError(
            f"{where}: 's3.bucket' {bucket_problem} "
            "(https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html)"
        )
    if "prefix" in s3_table:
        try:
            s3_table["prefix"] = normalize_prefix(s3_table["prefix"])
        except ValueError as exc:
            raise ConfigError(f"{where}: 's3.prefix' {exc}") from None
    s3 = S3Config(**s3_table)
    _endpoint(where, "s3.endpoint_url", s3.endpoint_url)
    _positive(where, "s3.failing_after_seconds", s3.failing_after_seconds)
    if s3.compression not in CODECS:
        choices = ", ".join(CODECS)
        raise ConfigError(
            f"{where}: 's3.compression' must be one of {choices}, got {s3.compression!r}"
        )
    codec = CODECS[s3.compression]
    if not codec.accepts(s3.compression_level):
        raise ConfigError(
            f"{where}: 's3.compression_level' for {codec.name} must be "
            f"{codec.describe_levels()}, got {s3.compression_level!r}"
        )
    cloudwatch = CloudWatchConfig(**sections["cloudwatch"])
    _endpoint(where, "cloudwatch.endpoint_url", cloudwatch.endpoint_url)
    _positive(where, "cloudwatch.interval_seconds", cloudwatch.interval_seconds)
    budget = _budget(where, sections["budget"])
    collector_id = top.get("collector_id") or socket.gethostname()
    if not _COLLECTOR_ID.match(collector_id):
        raise ConfigError(
            f"{where}: 'collector_id' may hold only letters, digits, '.', '_' and '-', "
            f"got {collector_id!r}"
        )
    return Config(
        collector_id=collector_id,
        x=x,
        spool=SpoolConfig(**spool_table),
        rotate=rotate,
        s3=s3,
        cloudwatch=cloudwatch,
        budget=budget,
    )


def is_loopback_url(url: str) -> bool:
    """True when the URL's host is this machine: localhost, 127.0.0.0/8 or ::1."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _budget(where: str, table: dict[str, Any]) -> BudgetConfig:
    budget = BudgetConfig(**table)
    for name in ("posts_per_day", "usd_per_month", "usd_per_post"):
        if getattr(budget, name) is not None:
            _positive(where, f"budget.{name}", getattr(budget, name))
    if not 1 <= budget.billing_cycle_day <= 31:
        raise ConfigError(
            f"{where}: 'budget.billing_cycle_day' must be an integer from 1 to 31 "
            f"(the day of the month X's billing cycle starts), got {budget.billing_cycle_day}"
        )
    if budget.on_exhausted not in ON_EXHAUSTED:
        raise ConfigError(
            f"{where}: 'budget.on_exhausted' must be one of {', '.join(ON_EXHAUSTED)}, "
            f"got {budget.on_exhausted!r}"
        )
    return budget


def load_config(path: str | os.PathLike[str], streaming: bool = True) -> Config:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except PermissionError:
        raise ConfigUnreadable(f"{path}: permission denied reading the config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    config = parse_config(data, str(path), streaming)
    return Config(**{**config.__dict__, "path": path})


def read_bearer_token(cfg: Config) -> str:
    """X_BEARER_TOKEN wins; else the token file. Errors name the file, never the token."""
    token = os.environ.get("X_BEARER_TOKEN", "").strip()
    if token:
        return token
    path = cfg.x.bearer_token_file
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(f"bearer token file {path} not found (x.bearer_token_file)") from None
    except PermissionError:
        raise ConfigError(
            f"bearer token file {path}: permission denied (x.bearer_token_file)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"bearer token file {path}: cannot read ({type(exc).__name__}) (x.bearer_token_file)"
        ) from None
    if not token:
        raise ConfigError(
            f"bearer token file {path} is empty (x.bearer_token_file: the app's bearer token "
            "from the X developer portal, or set X_BEARER_TOKEN)"
        )
    return token


def bearer_token_source(cfg: Config) -> str:
    """Where read_bearer_token found the token, for messages: the env variable or the key."""
    if os.environ.get("X_BEARER_TOKEN", "").strip():
        return "X_BEARER_TOKEN"
    return f"x.bearer_token_file {cfg.x.bearer_token_file}"
