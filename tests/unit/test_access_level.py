"""x.access_level: X's limits per access level, applied at load, by `check` and by preflight."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from collector.config import ConfigError, load_config
from collector.errors import EX_CONFIG
from collector.source.access import ACCESS_LEVELS, DEFAULT_ACCESS_LEVEL
from tests.collector_support import REPO, run_cli

CONFIG = """collector_id = "c1"
[x]
{x_keys}
{rules}
[spool]
dir = "{spool}"
[s3]
bucket = "my-bucket"
"""


def write(tmp_path: Path, x_keys: str = "", values: tuple[str, ...] = ("python",)) -> Path:
    rules = "".join(f'\n[[x.rules]]\nvalue = "{value}"\n' for value in values)
    path = tmp_path / "collector.toml"
    path.write_text(CONFIG.format(x_keys=x_keys, rules=rules, spool=tmp_path / "spool"))
    return path


def load_error(path: Path) -> str:
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return str(exc)
    raise AssertionError("the config loaded")


def test_pay_per_use_is_the_default_with_xs_documented_limits(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path))
    assert cfg.x.access_level == DEFAULT_ACCESS_LEVEL == "pay-per-use"
    limits = cfg.x.limits
    assert (limits.max_rules, limits.rule_max_length, limits.connections) == (1000, 1024, 1)
    assert not limits.backfill and not limits.recovery
    enterprise = ACCESS_LEVELS["enterprise"]
    assert (enterprise.max_rules, enterprise.rule_max_length, enterprise.connections) == (
        25000,
        2048,
        2,
    )
    assert enterprise.backfill and enterprise.recovery


def test_an_unknown_access_level_is_one_line_naming_the_key_and_run_exits_78(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, 'access_level = "basic"')
    message = load_error(path)
    assert "'x.access_level' must be one of pay-per-use, pro, enterprise, got 'basic'" in message
    run = run_cli("run", "--config", str(path))
    assert run.returncode == EX_CONFIG
    assert run.stderr.strip().splitlines() == [f"collector: error: {message}"]


def test_a_rule_over_the_levels_length_is_refused_and_enterprise_allows_it(tmp_path: Path) -> None:
    long_value = "a" * 1025
    message = load_error(write(tmp_path, values=(long_value,)))
    assert "'x.rules[0].value' is 1025 characters, over 1024" in message
    assert "X's limit for x.access_level = pay-per-use" in message
    cfg = load_config(write(tmp_path, 'access_level = "enterprise"', values=(long_value,)))
    assert cfg.x.rules[0].value == long_value
    over = "b" * 2049
    assert "over 2048" in load_error(write(tmp_path, 'access_level = "enterprise"', (over,)))


def test_rule_max_length_overrides_the_levels_limit(tmp_path: Path) -> None:
    keys = 'access_level = "enterprise"\nrule_max_length = 1500'
    message = load_error(write(tmp_path, keys, values=("c" * 1501,)))
    assert "over 1500 (x.rule_max_length = 1500)" in message


def test_more_rules_than_the_level_allows_are_refused(tmp_path: Path) -> None:
    values = tuple(f"word{number}" for number in range(1001))
    message = load_error(write(tmp_path, values=values))
    assert "'x.rules' holds 1001 rules, over the 1000" in message
    assert "x.access_level = pay-per-use" in message
    assert load_config(write(tmp_path, 'access_level = "enterprise"', values)).x.rules


def test_check_names_the_level_limit_before_asking_x(tmp_path: Path) -> None:
    check = run_cli("check", "--config", str(write(tmp_path, values=("d" * 1100,))))
    assert check.returncode == EX_CONFIG
    assert "FAIL  config:" in check.stdout and "over 1024" in check.stdout


def test_the_roles_choices_and_default_equal_the_table() -> None:
    for role, variable in (
        ("collector", "collector_x_access_level"),
        ("preflight", "preflight_x_access_level"),
    ):
        specs = yaml.safe_load((REPO / f"roles/{role}/meta/argument_specs.yml").read_text())
        assert specs["argument_specs"]["main"]["options"][variable]["choices"] == list(
            ACCESS_LEVELS
        )
    defaults = yaml.safe_load((REPO / "roles/collector/defaults/main.yml").read_text())
    assert defaults["collector_x_access_level"] == DEFAULT_ACCESS_LEVEL


def test_the_preflight_filter_applies_the_level_in_inventory_words() -> None:
    sys.path.insert(0, str(REPO / "roles/_common/filter_plugins"))
    try:
        from twittersnake import rules_problem_lines
    finally:
        sys.path.remove(str(REPO / "roles/_common/filter_plugins"))
    rules = [{"value": "e" * 1030, "tag": "long"}]
    (line,) = rules_problem_lines(rules, "filter", 0, "pay-per-use")
    assert "over 1024" in line and "collector_x_access_level = pay-per-use" in line
    assert rules_problem_lines(rules, "filter", 0, "enterprise") == []
    (wrong,) = rules_problem_lines(rules, "filter", 0, "premium")
    assert wrong.startswith("collector_x_access_level must be one of pay-per-use, pro, enterprise")


def test_clear_stale_connections_defaults_to_true_and_must_be_a_boolean(tmp_path: Path) -> None:
    assert load_config(write(tmp_path)).x.clear_stale_connections is True
    off = load_config(write(tmp_path, "clear_stale_connections = false"))
    assert off.x.clear_stale_connections is False
    message = load_error(write(tmp_path, 'clear_stale_connections = "no"'))
    assert "'x.clear_stale_connections' must be a boolean (true or false), got a string" in message


def test_check_says_which_access_level_and_limits_it_applies(tmp_path: Path) -> None:
    check = run_cli("check", "--config", str(write(tmp_path, 'access_level = "enterprise"')))
    (line,) = [line for line in check.stdout.splitlines() if line.startswith("ok    config:")]
    assert "access level enterprise: up to 25000 rules of 2048 characters" in line
