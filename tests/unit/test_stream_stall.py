"""A stalled stream without servers: XStream's callbacks (as tweepy calls them) on a clock the
test moves. A run of connections without a byte is one condition from the last byte received:
degraded after 30 s, failing after 2 minutes, healthy again with the next byte."""

from __future__ import annotations

from collector.source.stream import XStream
from collector.telemetry.health import DEGRADED, FAILING, HEALTHY, Health
from collector.telemetry.metrics import Metrics

STALL = (
    "X stream: no data from X for {} s (stalled; X sends a keep-alive every 20 s); "
    "tweepy reconnects"
)


def test_a_stall_over_many_connections_is_one_condition_from_the_last_byte() -> None:
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    health = Health(clock=clock)
    flows: list[tuple[bool, object]] = []
    metrics = Metrics()
    stream = XStream(
        "token", on_line=lambda _: None, metrics=metrics, health=health, clock=clock,
        on_flow=lambda flowing, at: flows.append((flowing, at)),
    )  # fmt: skip
    stream.on_connect()
    now[0] = 1.0
    stream.on_keep_alive()  # the last byte
    last_byte = stream.last_data_at
    for timeout_at in (22.0, 43.0, 64.0, 85.0, 106.0):  # tweepy: 21 s without a byte
        now[0] = timeout_at - 11  # open for 10 s without a byte: not healthy
        stream._connection_lasted(stream._generation)
        now[0] = timeout_at
        stream.on_connection_error()
        if timeout_at == 22.0:
            assert health.state() == (HEALTHY, None)  # within the 30 s grace
            now[0] = 31.0
            assert health.state() == (DEGRADED, STALL.format(30))
            assert metrics.snapshot()["last_stream_error"] == (
                "no data from X for 21 s (stalled; X sends a keep-alive every 20 s)"
            )
            now[0] = timeout_at
        stream.on_connect()
    now[0] = 121.0
    assert health.state() == (FAILING, STALL.format(120))
    assert flows == [(True, flows[0][1]), (False, last_byte)]  # silent connections: no flow
    now[0] = 130.0
    stream.on_keep_alive()  # data again: healthy at once, the repair span ends here
    assert health.state() == (HEALTHY, None)
    assert [flowing for flowing, _ in flows] == [True, False, True]


def test_a_condition_still_within_its_grace_logs_no_health_change(caplog) -> None:
    health = Health(clock=lambda: 0.0)
    with caplog.at_level("INFO", logger="collector.telemetry.health"):
        for _ in range(3):  # a blip reported and cleared again, as a short timeout does
            health.report("stream", DEGRADED, "X stream: closed", degraded_after=30)
            health.clear("stream")
    assert [r.getMessage() for r in caplog.records] == []
