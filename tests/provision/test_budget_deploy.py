"""With a budget, the deploy asks X's counts what the rules cost and stops when the forecast
exceeds the budget (-e budget_override=true goes on); without one it asks nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.collector_support import TOKEN
from tests.fakes.x_server import FakeXServer
from tests.provision import test_rules_deploy

PLAYBOOK = """
- name: The collector role's budget check, as the deploy runs it
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Estimate
      ansible.builtin.import_role:
        name: collector
        tasks_from: budget_check
"""
RULES = [{"value": "python lang:en", "tag": "python"}]


@pytest.fixture
def x_server() -> Iterator[FakeXServer]:
    server = FakeXServer(token=TOKEN, count=0).start()
    server.control({"counts_per_day": {"python lang:en": 14400}})
    yield server
    server.stop()


@pytest.fixture
def deploy(monkeypatch):
    monkeypatch.setattr(test_rules_deploy, "PLAYBOOK", PLAYBOOK)
    return test_rules_deploy.deploy


def test_a_forecast_over_the_budget_stops_the_deploy_with_the_figures(
    tmp_path: Path, x_server: FakeXServer, deploy
) -> None:
    budget = ("-e", "collector_budget_posts_per_day=1000")
    result = deploy(tmp_path, x_server.url, RULES, *budget)
    assert result.returncode == 2, result.stdout[-3000:]
    assert "14,400" in result.stdout and "over posts_per_day 1,000" in result.stdout
    assert "-e budget_override=true" in result.stdout
    assert TOKEN not in result.stdout + result.stderr
    assert x_server.stats()["counts_requests"] == 1
    result = deploy(tmp_path, x_server.url, RULES, *budget, "-e", "budget_override=true")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "over posts_per_day 1,000" in result.stdout  # shown, not stopped


def test_a_rule_that_cannot_be_estimated_warns_and_the_deploy_goes_on(
    tmp_path: Path, x_server: FakeXServer, deploy
) -> None:
    rules = [*RULES, {"value": "bio:researcher", "tag": "researchers"}]
    result = deploy(tmp_path, x_server.url, rules, "-e", "collector_budget_posts_per_day=20000")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "WARNING: budget: unknown for 1 rule(s) that cannot be estimated" in result.stdout
    assert "budget: holds" not in result.stdout
    assert x_server.stats()["counts_requests"] == 1


def test_without_a_budget_x_is_not_asked(tmp_path: Path, x_server: FakeXServer, deploy) -> None:
    result = deploy(tmp_path, x_server.url, RULES)
    assert result.returncode == 0, result.stdout[-3000:]
    assert x_server.stats()["counts_requests"] == 0


PREFLIGHT = PLAYBOOK.replace("tasks_from: budget_check", "tasks_from: preflight")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("collector_budget_posts_per_day=-1", "collector_budget_posts_per_day must be a whole"),
        ("collector_budget_usd_per_post=0", "collector_budget_usd_per_post must be a positive"),
        ("collector_budget_billing_cycle_day=32", "collector_budget_billing_cycle_day must be"),
    ],
)
def test_a_bad_budget_variable_stops_the_deploy_naming_it(
    tmp_path: Path, monkeypatch, extra: str, message: str
) -> None:
    monkeypatch.setattr(test_rules_deploy, "PLAYBOOK", PREFLIGHT)
    result = test_rules_deploy.deploy(tmp_path, "http://127.0.0.1:9", RULES, "-e", extra)
    assert result.returncode == 2, result.stdout[-3000:]
    assert "Stop on invalid collector inputs" in result.stdout
    assert message in result.stdout, result.stdout[-3000:]
