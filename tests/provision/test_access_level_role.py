"""The collector role writes x.access_level and x.clear_stale_connections as the collector reads."""

from __future__ import annotations

from pathlib import Path

from collector.config import load_config
from tests.collector_support import TOKEN
from tests.provision.test_prefix import render_roles


def test_the_role_renders_the_access_level_and_the_stale_connection_switch(tmp_path: Path) -> None:
    default = render_roles(tmp_path, "raw")["collector_toml"]["x"]
    assert default["access_level"] == "pay-per-use" and default["clear_stale_connections"] is True
    rendered = render_roles(
        tmp_path,
        "raw",
        collector_x_access_level="enterprise",
        collector_x_clear_stale_connections=False,
    )
    (tmp_path / "x_bearer_token").write_text(TOKEN)
    cfg = load_config(rendered["collector_toml_path"])  # what the collector reads on the host
    assert cfg.x.access_level == "enterprise" and cfg.x.limits.rule_max_length == 2048
    assert cfg.x.clear_stale_connections is False
