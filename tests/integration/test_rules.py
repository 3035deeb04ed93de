"""Rules: `rules sync` makes the live rules equal to the config and never touches others' rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from collector.config import load_config
from collector.source.rules import RulesAuthError, RulesClient
from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    run_cli,
    wait_until,
    write_config,
    x_server_fixture,
)
from tests.fakes.x_server import FakeXServer

x_server = x_server_fixture(count=0)


def live(server: FakeXServer) -> set[tuple[str, str | None]]:
    return {(r["value"], r.get("tag")) for r in server.rules.values()}


def test_sync_adds_missing_deletes_our_stale_rules_and_leaves_others_alone(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    # Someone else's rule on the same app, and a stale rule of ours from an older config.
    x_server.rules.update(
        {
            "1": {"id": "1", "value": "from another team", "tag": "their-tag"},
            "2": {"id": "2", "value": "no tag at all"},
            "3": {"id": "3", "value": "old interest", "tag": "test-1:old"},
            "4": {"id": "4", "value": "python lang:en", "tag": "test-1:python"},
        }
    )
    rules = [("python lang:en", "python"), ("rust lang:en", "rust")]
    cfg = load_config(write_config(tmp_path, x_server.url, rules=rules))
    result = RulesClient(cfg, TOKEN).sync()
    assert live(x_server) == {
        ("from another team", "their-tag"),
        ("no tag at all", None),
        ("python lang:en", "test-1:python"),
        ("rust lang:en", "test-1:rust"),
    }
    assert [r.id for r in result.deleted] == ["3"] and [r.id for r in result.kept] == ["4"]
    assert "4" in x_server.rules  # unchanged rules keep their id: no churn on the stream
    again = RulesClient(cfg, TOKEN).sync()
    assert (again.added, again.deleted) == ([], [])


def test_a_changed_tag_replaces_the_rule(tmp_path: Path, x_server: FakeXServer) -> None:
    x_server.rules["9"] = {"id": "9", "value": "python lang:en", "tag": "test-1:py"}
    cfg = load_config(write_config(tmp_path, x_server.url, rules=[("python lang:en", "python")]))
    RulesClient(cfg, TOKEN).sync()
    assert live(x_server) == {("python lang:en", "test-1:python")}


def test_rules_cli_lists_and_syncs(tmp_path: Path, x_server: FakeXServer) -> None:
    x_server.rules["1"] = {"id": "1", "value": "theirs", "tag": "other"}
    config = write_config(tmp_path, x_server.url, rules=[("python", "py")])
    synced = run_cli("rules", "sync", "--config", str(config))
    assert synced.returncode == 0, synced.stderr
    assert "added    tag=test-1:py  python" in synced.stdout
    assert "1 added, 0 deleted, 0 unchanged, 1 of other clients left alone" in synced.stdout
    listed = run_cli("rules", "list", "--config", str(config))
    assert listed.returncode == 0
    assert "1  other  tag=other  theirs" in listed.stdout
    assert "ours   tag=test-1:py  python" in listed.stdout
    as_json = json.loads(run_cli("rules", "list", "--json", "--config", str(config)).stdout)
    assert {r["value"] for r in as_json} == {"theirs", "python"}
    assert TOKEN not in synced.stdout + synced.stderr + listed.stdout + listed.stderr


def test_a_rejected_token_is_an_auth_error(tmp_path: Path, x_server: FakeXServer) -> None:
    cfg = load_config(write_config(tmp_path, x_server.url))
    with pytest.raises(RulesAuthError, match="HTTP 401"):
        RulesClient(cfg, "wrong-token").list()
    result = run_cli(
        "rules",
        "sync",
        "--config",
        str(write_config(tmp_path, x_server.url)),
        env={"X_BEARER_TOKEN": "wrong-token"},
    )
    assert result.returncode == 78
    assert len(result.stderr.strip().splitlines()) == 1 and "HTTP 401" in result.stderr
    assert "wrong-token" not in result.stderr


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        ("(python OR rust", "Missing closing parenthesis for this one (at position 1)"),
        ("python OR rust)", "Closing parenthesis without an opening one (at position 15)"),
        (
            '"python rust lang:en',
            'Unmatched double quote: a phrase needs a closing " (at position 1)',
        ),
        ("python langg:en", "Reference to invalid operator 'langg:en'. Operator is not available"),
        ("python OR", "OR must join two clauses: nothing on its right (at position 8)"),
        ("OR python", "OR must join two clauses: nothing on its left (at position 1)"),
        ("python or rust", "Ambiguous use of or as a keyword. Use OR to logically join two"),
        ("has:media", "Rules must contain a standalone operator: 'has:media' cannot be used by"),
        ("is:verified", "Rules must contain a standalone operator: 'is:verified' cannot be used"),
        ("has:links OR is:retweet", "Rules must contain a standalone operator: 'has:links'"),
        ("-python", "Rules must contain a non-negation term (at position 1)"),
        ("-is:retweet -is:reply", "Rules must contain a non-negation term (at position 1)"),
    ],
)
def test_the_stand_in_refuses_a_rule_x_cannot_parse_as_x_does(
    x_server: FakeXServer, value: str, detail: str
) -> None:
    for dry_run in ("true", "false"):
        response = requests.post(
            f"{x_server.url}/2/tweets/search/stream/rules?dry_run={dry_run}",
            json={"add": [{"value": value, "tag": "t"}, {"value": '(a OR "b c") -is:retweet'}]},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        body = response.json()
        assert response.status_code == 200
        assert body["meta"]["summary"]["invalid"] == 1, body
        (error,) = body["errors"]
        assert error["value"] == value and error["title"] == "UnprocessableEntity"
        assert error["type"].endswith("/problems/invalid-rules")
        assert error["details"][0].startswith(detail), error
        assert [r["value"] for r in body["data"]] == ['(a OR "b c") -is:retweet']
    assert live(x_server) == {('(a OR "b c") -is:retweet', None)}


def test_the_stand_in_refuses_a_rule_of_negations_only_with_x_two_sentences(
    x_server: FakeXServer,
) -> None:
    response = requests.post(
        f"{x_server.url}/2/tweets/search/stream/rules?dry_run=true",
        json={
            "add": [
                {"value": "-python"},
                {"value": '"X data" has:mentions (has:media OR has:links)'},
            ]
        },
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    body = response.json()
    (error,) = body["errors"]
    assert error["details"] == [
        "Rules must contain a non-negation term (at position 1)",
        "Rules must contain at least one positive, non-stopword clause (at position 1)",
    ]
    assert body["meta"]["summary"]["valid"] == 1, body


def test_rules_sync_check_refuses_a_rule_of_conjunction_required_operators_alone(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    rules = [("has:media", "media"), ("python has:media", "python")]
    config = write_config(tmp_path, x_server.url, rules=rules)
    result = run_cli("rules", "sync", "--check", "--config", str(config))
    assert (result.returncode, x_server.rules) == (2, {}), result.stdout + result.stderr
    assert (
        "refused    x.rules 'has:media' (tag test-1:media): UnprocessableEntity: Rules must "
        "contain a standalone operator: 'has:media' cannot be used by itself (at position 1)"
    ) in result.stdout.splitlines()
    assert "to add     tag=test-1:python  python has:media" in result.stdout.splitlines()


def test_check_fails_on_a_typo_rule_with_x_reason(tmp_path: Path, x_server: FakeXServer) -> None:
    rules = [("(python OR rust", "langs"), ("python lang:en", "python")]
    config = write_config(tmp_path, x_server.url, rules=rules)
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAIL  X rule:")]
    assert failed == [
        "FAIL  X rule: x.rules '(python OR rust' (tag test-1:langs): UnprocessableEntity: "
        "Missing closing parenthesis for this one (at position 1)"
    ], result.stdout
    assert x_server.rules == {}  # a dry run: nothing went live


def _config_checking_rules_often(tmp_path: Path, url: str, rules) -> Path:
    config = write_config(tmp_path, url, rules=rules, max_seconds=0.5)
    config.write_text(config.read_text().replace("[x]\n", "[x]\nrules_check_seconds = 0.5\n", 1))
    return config


def test_status_is_degraded_while_a_configured_rule_is_not_live_naming_it(
    tmp_path: Path, x_server: FakeXServer, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    config = _config_checking_rules_often(tmp_path, x_server.url, [("python lang:en", "python")])
    collector = CollectorProcess(config)

    def status() -> dict:
        result = run_cli("status", "--json", "--config", str(config))
        return json.loads(result.stdout) if result.stdout.startswith("{") else {}

    def health_is(health: str) -> dict | None:
        current = status()
        return current if current.get("health") == health else None

    try:
        wait_until(lambda: health_is("healthy"), 30, 0.3)
        # A rules-only deploy adds a rule X refuses: the file changes, the running collector stays.
        rules = [("python lang:en", "python"), ("(python OR rust", "langs")]
        _config_checking_rules_often(tmp_path, x_server.url, rules)
        assert run_cli("rules", "sync", "--config", str(config)).returncode == 1
        degraded = wait_until(lambda: health_is("degraded"), 20, 0.3)
        assert degraded["health_reason"] == (
            "X refused 1 rule(s): x.rules '(python OR rust' (tag test-1:langs): "
            "UnprocessableEntity: Missing closing parenthesis for this one (at position 1)"
        )
        # The typo fixed and synced: healthy again.
        rules = [("python lang:en", "python"), ("(python OR rust)", "langs")]
        _config_checking_rules_often(tmp_path, x_server.url, rules)
        assert run_cli("rules", "sync", "--config", str(config)).returncode == 0
        wait_until(lambda: health_is("healthy"), 20, 0.3)
        # Someone deletes one of our rules on X (the console, another script): named, with the fix.
        x_server.rules = {
            i: r for i, r in x_server.rules.items() if r["value"] != "(python OR rust)"
        }
        degraded = wait_until(lambda: health_is("degraded"), 20, 0.3)
        assert degraded["health_reason"] == (
            "1 configured rule(s) not live: x.rules '(python OR rust)' (tag test-1:langs): "
            "X accepts it (dry run) but it is not live: run collector rules sync"
        )
        check = run_cli("rules", "sync", "--check", "--config", str(config))
        assert check.returncode == 1
        assert "to add     tag=test-1:langs  (python OR rust)" in check.stdout
    finally:
        assert collector.stop() == 0, collector.log


def test_rules_sync_check_changes_nothing_and_exits_by_difference(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    config = write_config(tmp_path, x_server.url, rules=[("python lang:en", "python")])
    check = run_cli("rules", "sync", "--check", "--config", str(config))
    assert (check.returncode, x_server.rules) == (1, {}), check.stdout + check.stderr
    assert check.stdout.splitlines() == [
        "to add     tag=test-1:python  python lang:en",
        f"the live rules differ from {config}: 1 to add, 0 to delete",
    ]
    assert run_cli("rules", "sync", "--config", str(config)).returncode == 0
    same = run_cli("rules", "sync", "--check", "--config", str(config))
    assert same.returncode == 0 and same.stdout == f"the live rules match {config}\n"
    write_config(tmp_path, x_server.url, rules=[("python langg:en", "python")])
    refused = run_cli("rules", "sync", "--check", "--config", str(config))
    assert refused.returncode == 2
    assert "to delete  tag=test-1:python  python lang:en" in refused.stdout
    assert (
        "refused    x.rules 'python langg:en' (tag test-1:python): UnprocessableEntity: "
        "Reference to invalid operator 'langg:en'." in refused.stdout
    )


def test_a_rule_x_finds_too_long_is_shown_once_shortened_with_the_fix(
    tmp_path: Path, x_server: FakeXServer, s3
) -> None:
    """x.access_level = enterprise (2048) while X allows 1024: check names the fix and doubts
    the access level; the long value is shown once, shortened, with its length."""
    s3.create_bucket(Bucket=BUCKET)
    long_rule = "(" + " OR ".join(f"word{n}" for n in range(150)) + ")"
    assert 1024 < len(long_rule) <= 2048
    config = write_config(
        tmp_path, x_server.url, rules=[(long_rule, "long")], x_extra='access_level = "enterprise"'
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 1, result.stdout
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("FAIL  X rule:")]
    assert long_rule not in line and long_rule[:40] in line
    assert line.count(long_rule[:40]) == 1, line
    assert f"... ({len(long_rule):,} characters) (tag test-1:long)" in line
    assert "shorten the rule or split it into two rules" in line
    assert "is x.access_level right for this X project?" in line


def test_a_rule_over_the_limit_in_the_config_names_the_fix(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", rules=[("a" * 1025, "long")])
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 78
    assert "'x.rules[0].value' is 1025 characters, over 1024 (X's limit for x.access_level = " in (
        result.stdout
    )
    assert "shorten the rule or split it into two rules" in result.stdout
    assert "set x.access_level (enterprise: 2048) or x.rule_max_length" in result.stdout
