"""What the running collector makes of the last `collector compliance` run (status.json and
the CloudWatch metrics ComplianceRunFailed and ComplianceRunAge)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from collector.telemetry.metrics import DECLARED
from collector.telemetry.status import assess_compliance, compliance_fields

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC).timestamp()
METRICS = {m.cloudwatch: m for m in DECLARED if m.cloudwatch.startswith("Compliance")}


def record(spool: Path, run: dict) -> None:
    (spool / "compliance").mkdir(parents=True, exist_ok=True)
    (spool / "compliance" / "last_run.json").write_text(json.dumps(run))


def published(status: dict) -> dict[str, float | None]:
    return {name: metric.value(status) for name, metric in METRICS.items()}


def test_before_any_run_the_age_counts_from_the_collectors_start(tmp_path: Path) -> None:
    status = compliance_fields(tmp_path, NOW - 7200, NOW)
    assert status["compliance_last_run_ok"] is None and status["compliance_age_seconds"] == 7200
    assert published(status) == {"ComplianceRunFailed": 0, "ComplianceRunAge": 7200}


def test_a_successful_run_is_the_age_and_a_later_failure_keeps_it(tmp_path: Path) -> None:
    record(tmp_path, {"ok": True, "finished_at": "2026-12-03T03:40:00Z"})
    status = compliance_fields(tmp_path, NOW - 10, NOW)
    assert status["compliance_last_ok_at"] == "2026-12-03T03:40:00Z"
    assert published(status) == {"ComplianceRunFailed": 0, "ComplianceRunAge": 8 * 3600 + 1200}

    record(
        tmp_path,
        {
            "ok": False,
            "finished_at": "2026-12-03T11:00:00Z",
            "error": "X compliance job 1 failed: Job failed",
            "last_ok_at": "2026-12-02T03:40:00Z",
        },
    )
    status = compliance_fields(tmp_path, NOW - 10, NOW)
    assert status["compliance_last_error"] == "X compliance job 1 failed: Job failed"
    assert status["compliance_last_run_at"] == "2026-12-03T11:00:00Z"
    assert published(status) == {"ComplianceRunFailed": 1, "ComplianceRunAge": 32 * 3600 + 1200}


def test_an_unreadable_record_is_no_run_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "compliance").mkdir()
    (tmp_path / "compliance" / "last_run.json").write_text("{half")
    assert compliance_fields(tmp_path, NOW - 5, NOW)["compliance_last_run_ok"] is None


def test_a_scheduled_compliance_never_run_for_37_hours_degrades_fields_and_headline(
    tmp_path: Path,
) -> None:
    fields = compliance_fields(tmp_path, NOW - 37 * 3600, NOW)
    current = {"health": "healthy", "health_reason": None, **fields}
    verdict = "running (pid 7), healthy, connected"

    assert assess_compliance(0, verdict, current, None, None) == (0, verdict, current)
    code, headline, shown = assess_compliance(0, verdict, current, None, {"overdue_hours": 36})

    reason = "compliance overdue: no run succeeded since the collector started 37 h ago, over 36 h"
    assert code == 1 and headline.startswith(f"running (pid 7), degraded: {reason}")
    assert shown["health"] == "degraded" and shown["health_reason"].startswith(reason)
    fresh = compliance_fields(tmp_path, NOW - 35 * 3600, NOW)
    assert assess_compliance(0, verdict, {**current, **fresh}, None, {"overdue_hours": 36})[0] == 0
