"""Metric handles: each metric and status field is declared once in collector.telemetry.metrics
and the code passes the handle, so a misspelt name fails at import instead of counting into a
key nothing reads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collector.telemetry import metrics
from collector.telemetry.metrics import DECLARED, FIELDS, POSTS_RECEIVED, Metrics
from tests.conftest import REPO


def test_every_handle_names_one_declared_key() -> None:
    names = [m.name for m in DECLARED] + [f.name for f in FIELDS]
    assert len(names) == len(set(names))
    handles = {
        value.name
        for key, value in vars(metrics).items()
        if key.isupper() and isinstance(value, metrics.Metric | metrics.Field)
    }
    assert handles == set(names)


def test_counts_and_values_go_under_the_handles_names() -> None:
    counted = Metrics()
    counted.incr(POSTS_RECEIVED, 3)
    counted.set(metrics.LAST_ERROR, "S3 refuses uploads")
    assert counted.snapshot() == {"posts_received": 3, "last_error": "S3 refuses uploads"}
    assert counted.set_at(metrics.LAST_ERROR) is not None
    with pytest.raises(AttributeError):
        counted.incr("posts_received")  # type: ignore[arg-type]  # a name is not a handle


def test_a_misspelt_handle_fails_at_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from collector.telemetry.metrics import POSTS_RECIEVED"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot import name 'POSTS_RECIEVED'" in result.stderr
