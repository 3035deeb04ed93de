"""`collector rules estimate`: the figures X's counts imply, stream-only operators refused by
name, the cost question above 10 requests; the counts stand-in's own bill counts each request."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.collector_support import REPO, TOKEN, run_cli, write_config
from tests.fakes.x_server import FakeXServer

RULES = (("python lang:en", "python"), ("rust", "rust"), ("bio:engineer", "bios"))


@pytest.fixture
def x_server() -> Iterator[FakeXServer]:
    server = FakeXServer(token=TOKEN, count=0).start()
    server.control({"counts_per_day": {"python lang:en": 14400, "rust": 1000}})
    yield server
    server.stop()


def estimate(config: Path, *args: str, answer: str | None = None) -> subprocess.CompletedProcess:
    if answer is None:
        return run_cli("rules", "estimate", "--config", str(config), *args)
    return subprocess.run(
        [sys.executable, "-m", "collector", "rules", "estimate", "--config", str(config), *args],
        cwd=REPO,
        input=answer,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("spelling", ["tweet", "post"])
def test_the_estimate_prints_what_xs_counts_imply(
    tmp_path: Path, x_server: FakeXServer, spelling: str
) -> None:
    x_server.control({"counts_spelling": spelling})
    config = write_config(
        tmp_path, x_server.url, rules=RULES, extra="[budget]\nposts_per_day = 5000\n"
    )
    done = estimate(config, "--json")
    assert done.returncode == 4, done.stderr  # the forecast exceeds the budget
    figures = json.loads(done.stdout)
    by_tag = {rule["tag"]: rule for rule in figures["rules"]}
    python, rust, bios = (by_tag[name] for name in ("python", "rust", "bios"))
    assert python["posts_per_day"] == 14400 and python["usd_per_day"] == 72.0
    assert python["usd_per_30_days"] == 2160.0
    assert rust["posts_per_day"] == 1000 and rust["usd_per_30_days"] == 150.0
    assert bios["posts_per_day"] is None
    assert bios["cannot_be_estimated"].startswith("cannot be estimated: 'bio:' is a stream-only")
    assert figures["total_posts_per_day"] == 15400 and figures["total_usd_per_day"] == 77.0
    assert figures["monthly_cap_day"] is None  # 462,000 posts in 30 days: under 3M
    assert figures["counts_requests"] == 2 and figures["counts_usd"] == 0.01
    stats = x_server.stats()
    # the stream-only rule was never sent; X billed two requests
    assert stats["counts_requests"] == 2 and stats["counts_usd"] == 0.01
    assert sorted(stats["counts_queries"]) == ["python lang:en", "rust"]


def test_the_text_names_each_rule_the_total_the_cap_and_the_budget(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    x_server.control({"counts_per_day": {"python lang:en": 144000, "rust": 1000}})
    config = write_config(
        tmp_path, x_server.url, rules=RULES, extra="[budget]\nusd_per_month = 1000\n"
    )
    done = estimate(config)
    assert done.returncode == 4, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.split()[:3] == ["144,000", "720.00", "21,600.00"] for line in lines), lines
    assert any(line.split()[:3] == ["1,000", "5.00", "150.00"] for line in lines)
    assert any("cannot be estimated: 'bio:' is a stream-only operator" in line for line in lines)
    total = next(
        line for line in lines if "  total of the rules estimated; it leaves out 1 rule(s)" in line
    )
    assert total.split()[:3] == ["145,000", "725.00", "21,750.00"]
    # 3,000,000 / 145,000 = 20.7 days
    assert "would be reached on day 21 of a billing cycle (20.7 days)" in done.stdout
    assert "budget: exceeded: $21,750.00 per 30 days is over usd_per_month $1,000.00" in done.stdout
    assert "this estimate: 2 request(s) to X's counts endpoint, $0.010" in done.stdout


def test_within_the_budget_the_exit_code_is_0(tmp_path: Path, x_server: FakeXServer) -> None:
    config = write_config(
        tmp_path, x_server.url, rules=RULES[:2], extra="[budget]\nposts_per_day = 20000\n"
    )
    done = estimate(config)
    assert done.returncode == 0, done.stderr
    assert "budget: holds" in done.stdout
    hourly = json.loads(estimate(config, "--granularity", "hour", "--json").stdout)
    assert hourly["total_posts_per_day"] == 15400 and hourly["over_budget"] == []


def test_a_rule_that_cannot_be_estimated_leaves_the_verdict_unknown(
    tmp_path: Path, x_server: FakeXServer
) -> None:
    config = write_config(
        tmp_path, x_server.url, rules=RULES, extra="[budget]\nposts_per_day = 20000\n"
    )
    done = estimate(config)
    assert done.returncode == 5, done.stderr
    assert "budget: holds" not in done.stdout and "upper bound" not in done.stdout
    assert (
        "total of the rules estimated; it leaves out 1 rule(s) that cannot be estimated, whose "
        "posts are billed too" in done.stdout
    )
    assert "budget: unknown for 1 rule(s) that cannot be estimated (the others hold it)" in (
        done.stdout
    )
    figures = json.loads(estimate(config, "--json").stdout)
    assert figures["budget_verdict"] == "unknown" and figures["not_estimated"] == 1


def test_pausing_within_the_hour_is_said_in_minutes(tmp_path: Path, x_server: FakeXServer) -> None:
    config = write_config(
        tmp_path, x_server.url, rules=RULES[:2], extra="[budget]\nposts_per_day = 100\n"
    )
    done = estimate(config)
    assert done.returncode == 4, done.stderr
    # 100 of 15,400 posts a day: 24 h * 100 / 15,400 = 9.35 minutes
    assert "would pause each UTC day after about 9 min" in done.stdout


def test_more_than_10_requests_are_asked_for_first(tmp_path: Path, x_server: FakeXServer) -> None:
    rules = tuple((f"topic{n}", f"t{n}") for n in range(11))
    config = write_config(tmp_path, x_server.url, rules=rules)
    declined = estimate(config, answer="n\n")
    assert declined.returncode == 1
    assert "makes 11 requests to X's counts endpoint, $0.055" in declined.stderr
    assert x_server.stats()["counts_requests"] == 0
    accepted = estimate(config, answer="y\n")
    assert accepted.returncode == 0, accepted.stderr
    assert "budget: none set" in accepted.stdout
    assert x_server.stats()["counts_requests"] == 11
    assert estimate(config, "--yes").returncode == 0  # no question asked
    assert x_server.stats()["counts_requests"] == 22


def test_a_query_x_refuses_is_one_line_in_xs_words(tmp_path: Path, x_server: FakeXServer) -> None:
    x_server.control({"counts_query_max_length": 10})  # X's limit below what the collector knows
    config = write_config(tmp_path, x_server.url, rules=RULES[:1])
    done = estimate(config)
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "collector: error: X's counts endpoint: HTTP 400 Invalid Request: The `query` query"
        )
    )
    assert TOKEN not in done.stderr
