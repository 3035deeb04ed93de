"""collector_x_repair reaches the collector: the role renders x.repair and its margin, and the
collector loads them (gap repair on by default, off when the inventory says so)."""

from __future__ import annotations

from pathlib import Path

from collector.config import load_config
from tests.provision.test_prefix import render_roles


def test_the_role_renders_gap_repair_the_collector_loads(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    default = load_config(render_roles(tmp_path / "a", "raw")["collector_toml_path"])
    assert (default.x.repair, default.x.repair_margin_seconds) == ("auto", 5)
    rendered = render_roles(
        tmp_path / "b", "raw", collector_x_repair="off", collector_x_repair_margin_seconds=30
    )
    chosen = load_config(rendered["collector_toml_path"])
    assert (chosen.x.repair, chosen.x.repair_margin_seconds) == ("off", 30)
