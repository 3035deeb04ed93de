"""`collector usage`: X's usage figures beside the collector's ledger, and any difference."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    run_cli,
    wait_until,
    write_config,
)
from tests.fakes.x_server import FakeXServer


def test_usage_shows_xs_figures_beside_the_ledger(tmp_path: Path, s3) -> None:
    s3.create_bucket(Bucket=BUCKET)
    with FakeXServer(token=TOKEN, count=0, keepalive_interval=1.0) as x_server:
        config = write_config(tmp_path, x_server.url, max_seconds=0.5)
        collector = CollectorProcess(config)
        try:
            wait_until(lambda: x_server.connections == 1, 20)
            x_server.count = 120
            wait_until(lambda: x_server.billed_posts() == 120, 20)
            wait_until(
                lambda: run_cli("status", "--json", "--config", str(config)).stdout.count(
                    '"billable_posts_today": 120'
                ),
                20,
                0.5,
            )
        finally:
            assert collector.stop() == 0
        today = datetime.now(UTC).date().isoformat()
        shown = run_cli("usage", "--config", str(config))
        assert shown.returncode == 0, shown.stderr
        assert (
            "X (GET /2/usage/tweets): 120 posts read this billing cycle of the project's "
            "cap of 3,000,000 (0.0 %)" in shown.stdout
        )
        assert "ledger (this collector): 120 billable posts since " in shown.stdout
        assert "$0.60 at $0.005 a post" in shown.stdout and "difference: none" in shown.stdout
        assert f"{today}          120        120          +0" in shown.stdout
        assert "total_balance $25.0, prepaid_balance $20.0, free_balance $5.0" in shown.stdout

        x_server.record_delivered(["1", "2", "3"])  # read by another app of the project
        x_server.control({"usage_credits": None})  # this account has no credits endpoint
        shown = run_cli("usage", "--config", str(config))
        assert "difference: X counts 3 more posts than the ledger" in shown.stdout
        assert "not available for this account (X: 404)" in shown.stdout
        figures = json.loads(run_cli("usage", "--json", "--config", str(config)).stdout)
        assert figures["x"]["project_usage"] == 123 and figures["x"]["credits"] is None
        assert figures["ledger"]["billable_posts_cycle"] == 120
        assert figures["ledger"]["daily"][today] == 120 and figures["x"]["daily"][today] == 123


def test_x_refusing_the_token_is_one_line(tmp_path: Path) -> None:
    with FakeXServer(token="another", count=0) as x_server:
        config = write_config(tmp_path, x_server.url)
        shown = run_cli("usage", "--config", str(config))
    assert shown.returncode == 1
    assert shown.stderr.strip().startswith("collector: error: X API /2/usage/tweets: HTTP 401")
    assert TOKEN not in shown.stderr
