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
