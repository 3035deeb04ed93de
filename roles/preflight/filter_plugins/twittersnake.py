"""Filters that apply the collector's own input rules to the inventory (one source per rule).

    {{ twittersnake_prefix | twittersnake_key_prefix }}   "tweets/" for "tweets", "tweets/",
                                                          "/tweets"; "" for the bucket's root
    {{ name | twittersnake_bucket_problem }}             "" or why S3 refuses the bucket name
    {{ prefix | twittersnake_prefix_problem }}           "" or why S3 keys cannot use the prefix
    {{ rules | twittersnake_rules_problems(stream, max, level) }}  one line a problem, [] if none

Each calls the function the collector itself runs at load (collector/spool/layout.py,
collector/config.py), imported from this checkout, so the policy, the Athena location,
preflight and the collector cannot disagree.
"""

from __future__ import annotations

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


class FilterModule:
    def filters(self) -> dict:
        return {
            "twittersnake_key_prefix": key_prefix,
            "twittersnake_prefix_problem": prefix_problem_text,
            "twittersnake_bucket_problem": bucket_problem_text,
            "twittersnake_rules_problems": rules_problem_lines,
        }
