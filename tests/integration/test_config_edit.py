"""A running collector whose config file is edited into an invalid one: it says so (one
WARNING, degraded) and keeps the configuration it loaded at start."""

from __future__ import annotations

import json
import time

from tests.collector_support import (
    BUCKET,
    TOKEN,
    CollectorProcess,
    run_cli,
    wait_until,
    write_config,
)
from tests.fakes.x_server import FakeXServer


def status(config) -> dict:
    return json.loads(run_cli("status", "--json", "--config", str(config)).stdout)


def test_an_invalid_edit_is_shown_degraded_with_one_warning_and_collection_goes_on(
    tmp_path, s3
) -> None:
    s3.create_bucket(Bucket=BUCKET)
    server = FakeXServer(token=TOKEN, rate=20, keepalive_interval=0.5).start()
    config = write_config(tmp_path, server.url, x_extra="rules_check_seconds = 1")
    collector = CollectorProcess(config)
    good = config.read_text()
    try:
        wait_until(lambda: status(config).get("connection") == "connected", 20, 0.3)
        config.write_text(good.replace('value = "python lang:en"', f'value = "{"a" * 1025}"'))
        degraded = wait_until(
            lambda: (s := status(config)).get("health") == "degraded" and s, 10, 0.3
        )
        time.sleep(3)  # three more checks of the same invalid file
        posts = status(config)["posts_received"]
        config.write_text(good)
        wait_until(lambda: status(config).get("health") == "healthy", 10, 0.3)
        assert status(config)["posts_received"] > posts  # collecting all along
    finally:
        assert collector.stop() == 0, collector.log
        server.stop()
    reason = degraded["health_reason"]
    assert reason.startswith("config file now invalid: ")
    assert "1025 characters" in reason or "1,025 characters" in reason, reason
    assert reason.endswith(
        "; running with the configuration loaded at start (a restart would stop with exit 78: "
        "fix the file first)"
    )
    warnings = [line for line in collector.log.splitlines() if "config file now invalid" in line]
    # one WARNING for the edit (beside health's own line on turning degraded), not one a check
    ours = [line for line in warnings if "WARNING collector.app: config file now invalid" in line]
    assert len(ours) == 1 and len(warnings) == 2, warnings
    assert "is valid again" in collector.log
