"""X's prices and caps have one definition each (collector.source.pricing), which the runtime and
the analysis both read; the analysis can import it without the collector's runtime packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from collector.source import pricing

PACKAGE = Path(__file__).resolve().parents[2] / "collector"
FIGURES = {pricing.USD_PER_POST, pricing.USD_PER_COUNTS_REQUEST, pricing.MONTHLY_CAP}


def test_no_module_but_pricing_spells_xs_prices_or_cap() -> None:
    copies = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "pricing.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            is_number = isinstance(node, ast.Constant) and type(node.value) in (int, float)
            if is_number and node.value in FIGURES:
                copies.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value}")
    assert copies == []


def test_the_analysis_reads_the_prices_without_the_runtime_packages() -> None:
    # numpy, tweepy, boto3 and simdjson made unimportable: pricing must not need them
    code = (
        "import sys\n"
        "for name in ('numpy', 'tweepy', 'boto3', 'simdjson', 'zstandard'):\n"
        "    sys.modules[name] = None\n"
        "from collector.source.pricing import MONTHLY_CAP, USD_PER_POST\n"
        "print(f'{MONTHLY_CAP * USD_PER_POST:,.2f}')\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent
    )
    assert (shown.returncode, shown.stdout) == (0, "15,000.00\n"), shown.stderr


def test_the_reports_cost_section_shows_the_cap_and_the_day_the_forecast_reaches_it() -> None:
    from datetime import date

    from collector.analysis.report import _cost_section

    status = {
        "billable_posts_today": 432_000,
        "spend_usd_today": 2160.0,
        "spend_usd_cycle": 4320.0,
        "billing_cycle_start": "2026-12-01",
        "spend_usd_cycle_forecast": 15_000.0,
        "monthly_cap_reached_on": "2026-12-07",
        "budget": {},
    }
    page = _cost_section([(date(2026, 12, 2), 1_500_000)], pricing.USD_PER_POST, status)
    assert "up to 3,000,000 post reads per monthly billing cycle" in page
    assert "<td>2026-12-02</td><td>1,500,000</td><td>$7,500.00</td><td>50.00 %</td>" in page
    assert (
        "$15,000.00 forecast at the cycle's end (X's monthly cap reached on 2026-12-07); " in page
    )
