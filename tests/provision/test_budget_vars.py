"""The collector role's collector_budget_* variables reach the collector's [budget] as typed
keys, and the defaults mean the meter without a limit."""

from __future__ import annotations

from pathlib import Path

import yaml

from collector.config import load_config
from tests.collector_support import TOKEN
from tests.conftest import REPO
from tests.provision.test_prefix import render_roles

ROLE = REPO / "roles" / "collector"


def test_budget_variables_render_into_the_collectors_budget(tmp_path: Path) -> None:
    (tmp_path / "x_bearer_token").write_text(TOKEN)
    default = render_roles(tmp_path, "tweets")
    budget = load_config(default["collector_toml_path"]).budget
    assert not budget.limited and budget.usd_per_post == 0.005
    assert (budget.billing_cycle_day, budget.on_exhausted) == (1, "pause")
    chosen = render_roles(
        tmp_path,
        "tweets",
        collector_budget_posts_per_day=20000,
        collector_budget_usd_per_month=250.5,
        collector_budget_usd_per_post=0.004,
        collector_budget_billing_cycle_day=17,
        collector_budget_on_exhausted="continue",
    )
    budget = load_config(chosen["collector_toml_path"]).budget
    assert (budget.posts_per_day, budget.usd_per_month) == (20000, 250.5)
    assert budget.usd_per_post == 0.004
    assert (budget.billing_cycle_day, budget.on_exhausted) == (17, "continue")


def test_every_budget_default_has_its_argument_spec() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    budget = {k for k in defaults if k.startswith("collector_budget_")}
    assert budget == {
        "collector_budget_posts_per_day",
        "collector_budget_usd_per_month",
        "collector_budget_usd_per_post",
        "collector_budget_billing_cycle_day",
        "collector_budget_on_exhausted",
    }
    assert budget <= set(options)
    assert options["collector_budget_on_exhausted"]["choices"] == ["pause", "continue"]
