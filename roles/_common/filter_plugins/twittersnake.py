"""Filters that apply the collector's own input rules to the inventory (one source per rule).

    {{ twittersnake_prefix | twittersnake_key_prefix }}   "tweets/" for "tweets", "tweets/",
                                                          "/tweets"; "" for the bucket's root
    {{ name | twittersnake_bucket_problem }}             "" or why S3 refuses the bucket name
    {{ prefix | twittersnake_prefix_problem }}           "" or why S3 keys cannot use the prefix
    {{ rules | twittersnake_rules_problems(stream, max, level) }}  one line a problem, [] if none
    {{ cidrs | twittersnake_cidr_problems(allow_world) }}  one line a problem, [] if none

Each calls the function the collector itself runs at load (collector/spool/layout.py,
collector/config.py), imported from this checkout, so the policy, the Athena location,
preflight and the collector cannot disagree.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

from ansible.errors import AnsibleFilterError

_REPO = Path(__file__).resolve().parents[3]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from collector.config import ConfigError, parse_rules, rules_problems  # noqa: E402
from collector.source.access import ACCESS_LEVELS  # noqa: E402
from collector.spool.layout import bucket_name_problem, prefix_path, prefix_problem  # noqa: E402

# The collector's TOML keys, as the inventory spells them.
_INVENTORY_NAMES = {
    "'x.rules": "'collector_x_rules",
    "x.rule_max_length": "collector_x_rule_max_length",
    "x.access_level": "collector_x_access_level",
}


def _inventory_words(message: str) -> str:
    for toml_key, variable in _INVENTORY_NAMES.items():
        message = message.replace(toml_key, variable)
    return message


def key_prefix(prefix: str) -> str:
    try:
        return prefix_path(prefix)
    except ValueError as exc:
        raise AnsibleFilterError(f"twittersnake_prefix {exc}") from None


def prefix_problem_text(prefix: str) -> str:
    return prefix_problem(prefix) or ""


def bucket_problem_text(name: str) -> str:
    return bucket_name_problem(name) or ""


def rules_problem_lines(
    rules: object, stream: str = "filter", max_length: int = 0, access_level: str = "pay-per-use"
) -> list[str]:
    if access_level not in ACCESS_LEVELS:
        return [
            f"collector_x_access_level must be one of {', '.join(ACCESS_LEVELS)}, "
            f"got {access_level!r}"
        ]
    if rules is None:
        return []
    if not isinstance(rules, list):
        return ["'collector_x_rules' must be a list of {value, tag}"]
    try:
        parsed = parse_rules("collector_x_rules", rules)
    except ConfigError as exc:
        return [_inventory_words(str(exc).removeprefix("collector_x_rules: "))]
    problems = rules_problems(parsed, stream, int(max_length or 0) or None, access_level)
    return [_inventory_words(problem) for problem in problems]


# A network wider than this is "the world" for SSH: /8 is 16.7M IPv4 addresses; an IPv6 /32
# is what a regional registry allocates to a whole provider.
WORLD_IPV4_PREFIX = 8
WORLD_IPV6_PREFIX = 32


def cidr_problems(cidrs: object, allow_world: bool = False) -> list[str]:
    """network_admin_cidrs, parsed strictly (Python's ipaddress, strict=True): one line per
    problem, [] when none.

    An entry with host bits set (`203.0.113.7/0`, a typo for /32) is an error naming it, as is
    one that is not a CIDR. A network wider than /8 (IPv4) or /32 (IPv6), `0.0.0.0/0`, `::/0`
    and two `/1` halves among them, opens SSH to the world: refused unless allow_world.
    """
    name = "network_admin_cidrs"
    if not cidrs:
        return [f'{name} is empty: give the CIDRs allowed to reach SSH, e.g. ["203.0.113.7/32"]']
    if not isinstance(cidrs, list):
        return [f'{name} must be a list of CIDRs, e.g. ["203.0.113.7/32"]']
    invalid, problems, world = [], [], []
    for entry in cidrs:
        text = str(entry).strip()
        try:
            if "/" not in text:  # ipaddress reads a bare address as /32 or /128: say which
                raise ValueError("no prefix length")
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as error:
            if "/" in text and "has host bits set" in str(error):
                loose = ipaddress.ip_network(text, strict=False)
                single = f"{text.split('/')[0]}/{loose.max_prefixlen}"
                problems.append(
                    f"{name} entry {text!r} has host bits set: it means {loose} "
                    f"({loose.num_addresses} addresses); for one address write {single}"
                )
            else:
                invalid.append(text)
            continue
        limit = WORLD_IPV4_PREFIX if network.version == 4 else WORLD_IPV6_PREFIX
        if network.prefixlen < limit:
            world.append(str(network))
    if invalid:
        problems.insert(
            0,
            f"{name} has invalid CIDRs: {', '.join(invalid)} (expected address/prefix length, "
            "e.g. 203.0.113.7/32)",
        )
    if world and not allow_world:
        problems.append(
            f"{name} opens SSH to the world (0.0.0.0/0 or ::/0): {', '.join(world)} "
            f"(wider than /{WORLD_IPV4_PREFIX} IPv4 or /{WORLD_IPV6_PREFIX} IPv6 counts as the "
            "world); set network_allow_world_ssh=true to allow it on purpose"
        )
    return problems


class FilterModule:
    def filters(self) -> dict:
        return {
            "twittersnake_key_prefix": key_prefix,
            "twittersnake_prefix_problem": prefix_problem_text,
            "twittersnake_bucket_problem": bucket_problem_text,
            "twittersnake_rules_problems": rules_problem_lines,
            "twittersnake_cidr_problems": cidr_problems,
        }
