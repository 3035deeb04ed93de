"""The generic stage runner (collector/spool/stages.py) on real folders, without S3.

The shipper's behaviour over moto is in test_shipping.py; these pin what every stage gets from
the runner: oldest file first, retries forever with backoff, a held file waits alone, rescans
find files nobody submitted, a stage's output feeds the next stage, drain keeps its deadline.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from collector.spool import stages
from collector.spool.stages import Held, Stage, StageRunner
from tests.collector_support import wait_until


def name(seq: int) -> str:
    return f"t-1-20260102T030405Z-{seq:06d}.jsonl"


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    return first, second


class Recorder:
    """A stage handler that moves each file from its folder to `target` (or deletes it)."""

    def __init__(self, folder: Path, target: Path | None = None) -> None:
        self.folder, self.target = folder, target
        self.done: list[str] = []
        self.failures: list[tuple[str, str, float, bool]] = []
        self.fail_first = 0
        self.hold: set[str] = set()
        self.lock = threading.Lock()

    def handle(self, file_name: str) -> str | None:
        with self.lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                raise OSError(28, "No space left on device")
        if file_name in self.hold:
            raise Held(f"{file_name} is held")
        path = self.folder / file_name
        if self.target is None:
            path.unlink()
        else:
            path.rename(self.target / file_name)
        self.done.append(file_name)
        return file_name

    def failed(self, file_name: str, exc: BaseException, delay: float, held: bool) -> None:
        self.failures.append((file_name, str(exc), delay, held))


def runner(*steps: tuple[Recorder, Path], workers: int = 1) -> StageRunner:
    return StageRunner(
        [
            Stage(f"s{i}", folder, step.handle, step.failed, workers=workers)
            for i, (step, folder) in enumerate(steps)
        ],
        prefix="test",
        retry_base=0.02,
        retry_cap=0.2,
    )


def test_files_go_oldest_first_through_a_chain_of_stages(folders) -> None:
    first, second = folders
    for seq in (3, 1, 2):
        (first / name(seq)).write_text("x")
    move, finish = Recorder(first, second), Recorder(second)
    chain = runner((move, first), (finish, second))
    try:
        chain.start()
        assert chain.drain(time.monotonic() + 10) == 0
    finally:
        chain.stop()
    assert move.done == [name(1), name(2), name(3)]
    assert finish.done == [name(1), name(2), name(3)]
    assert not list(first.iterdir()) and not list(second.iterdir())


def test_a_failing_stage_retries_with_growing_jittered_waits_and_skips_nothing(folders) -> None:
    first, _ = folders
    for seq in (1, 2):
        (first / name(seq)).write_text("x")
    step = Recorder(first)
    step.fail_first = 4
    chain = runner((step, first))
    try:
        chain.start()
        wait_until(lambda: step.done == [name(1), name(2)], timeout=10)
    finally:
        chain.stop()
    assert len(step.failures) == 4
    assert all(f[0] == name(1) and "No space left" in f[1] and not f[3] for f in step.failures)
    assert all(0 <= f[2] <= 0.2 for f in step.failures)  # full jitter under the cap


def test_a_failed_file_is_not_retried_by_another_worker_before_its_announced_wait(
    folders,
) -> None:
    """The wait a failure reports ("retry in N s" in the log) holds for every worker."""
    first, _ = folders
    (first / name(1)).write_text("x")
    step = Recorder(first)
    step.fail_first = 3
    attempts: list[float] = []
    handle = step.handle

    def timed(file_name: str) -> str | None:
        attempts.append(time.monotonic())
        return handle(file_name)

    step.handle = timed
    chain = runner((step, first), workers=2)
    chain.stages[0].handle = timed
    try:
        chain.start()
        wait_until(lambda: step.done == [name(1)], timeout=10)
    finally:
        chain.stop()
    assert len(step.failures) == 3 and len(attempts) == 4
    waits = zip(step.failures, attempts[:3], attempts[1:], strict=True)
    for (_, _, delay, _), before, after in waits:
        assert after - before >= delay - 0.005, (delay, after - before)


def test_a_held_file_waits_alone_and_drain_does_not_wait_for_it(folders) -> None:
    first, _ = folders
    for seq in (1, 2, 3):
        (first / name(seq)).write_text("x")
    step = Recorder(first)
    step.hold = {name(1)}
    chain = runner((step, first))
    try:
        chain.start()
        began = time.monotonic()
        assert chain.drain(began + 10) == 1
        assert time.monotonic() - began < 5
        wait_until(lambda: len(step.failures) >= 2, timeout=10)
    finally:
        chain.stop()
    assert step.done == [name(2), name(3)]
    assert (first / name(1)).exists()
    assert all(f[0] == name(1) and f[3] for f in step.failures)


def test_a_file_nobody_submitted_is_found_by_the_rescan(folders, monkeypatch) -> None:
    first, _ = folders
    monkeypatch.setattr(stages, "RESCAN_SECONDS", 0.2)
    step = Recorder(first)
    chain = runner((step, first))
    try:
        chain.start()
        (first / name(7)).write_text("x")  # appears after the start, never submitted
        wait_until(lambda: step.done == [name(7)], timeout=10)
    finally:
        chain.stop()


def test_drain_returns_at_its_deadline_when_a_stage_keeps_failing(folders) -> None:
    first, _ = folders
    (first / name(1)).write_text("x")
    step = Recorder(first)
    step.fail_first = 10**6
    chain = runner((step, first))
    chain.start()
    began = time.monotonic()
    assert chain.drain(began + 1.5) == 1
    assert 1.4 <= time.monotonic() - began < 3
    chain.stop(budget=2.0)
    assert not any(t.is_alive() for t in chain.threads)
