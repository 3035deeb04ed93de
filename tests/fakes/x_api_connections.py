"""X's connection limit and Connections API, as the stand-in answers them (loaded by
tests.fakes.x_server).

    GET    /2/connections[?status=active&endpoints=filtered_stream&connection.fields=...]
           {"data": [{"id", ...asked fields}], "meta": {"result_count"}}
    DELETE /2/connections/all                     every connection of the app
    DELETE /2/connections/{endpoint_id}           e.g. filtered_stream
    DELETE /2/connections   {"uuids": [...]}      those connections
           {"data": {"successful_kills", "failed_kills", "results": [{"uuid", "success"}]}}

Shapes from X's OpenAPI 2.167 (xdevplatform/docs openapi.json: getConnectionHistory,
deleteAllConnections, deleteConnectionsByEndpoint, deleteConnectionsByUuids; the Connection
object's fields client_ip, connected_at, disconnect_reason, disconnected_at, endpoint_name, id;
`status` active|inactive|all, default active). The DELETE endpoints allow 25 requests per 15
minutes per app here (X's figure for DELETE /2/connections/all).

The connection limit: with `connection_limit` N set, a stream connection beyond N open ones
(live or stale) gets X's 429 TooManyConnections (PROBLEMS[429], the body quoted in tweepy#1962).
A "stale" connection is one X still counts after its client died without closing it (a kill -9,
a lost network: xdevplatform/samples#140): it holds a place until it expires or is ended
through the Connections API. Pay-per-use allows 1 connection, Enterprise 2
(collector/source/access.py); the limit is off by default because most tests restart
collectors against one stand-in without caring about the count.

Knobs (FakeXServer.control or POST /_fake/control):
    access_level "pay-per-use" | "pro" | "enterprise"
                                       the rule length X allows (1,024, 1,024, 2,048); with a
                                       connection limit set, also the connections (1, 1, 2)
                                       (x_api_recovery follows the same knob for backfill)
    connection_limit N | null          connections allowed (null: no limit)
    stale_connection S                 hold one stale filtered-stream connection for S seconds
                                       (0 ends every stale one)
    connections_api 404 | 403 | null   the Connections API answers that status (not available
                                       to the project) instead of working
Stats: connections_deleted (connections ended through the API), connections_api_requests.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

from tests.fakes.x_server import (
    PROBLEMS,
    _invalid_request,
    _iso,
    _now_iso,
    knob,
    route,
    stats_part,
    stream_gate,
)

FAMILY = "connections"
FIELDS = (
    "client_ip",
    "connected_at",
    "disconnect_reason",
    "disconnected_at",
    "endpoint_name",
    "id",
)
ENDPOINTS = ("filtered_stream", "sample_stream")
DELETE_LIMIT, WINDOW = 25, 15 * 60.0
# X's filtered-stream limits per access level (xdevplatform/docs
# x-api/posts/filtered-stream/introduction.mdx): (connections, rule length)
ACCESS_LEVELS = {"pay-per-use": (1, 1024), "pro": (1, 1024), "enterprise": (2, 2048)}


class ConnectionsState:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.limit: int | None = None
        self.stale: dict[str, dict] = {}  # id -> connection, with "expires" (time.monotonic)
        self.ended: list[dict] = []  # inactive connections, with disconnected_at and reason
        self.unavailable: int | None = None
        self.deletes: list[float] = []
        self.deleted = 0
        self.requests = 0


def state(fake) -> ConnectionsState:
    with fake._lock:
        return fake.ext.setdefault(FAMILY, ConnectionsState())


def _live_stale(connections: ConnectionsState) -> list[dict]:
    """Under the lock: the stale connections that have not expired."""
    now = time.monotonic()
    for conn_id in [i for i, c in connections.stale.items() if c["expires"] <= now]:
        connections.ended.append(_ended(connections.stale.pop(conn_id), "StaleTimeout"))
    return list(connections.stale.values())


def _ended(connection: dict, reason: str) -> dict:
    public = {k: v for k, v in connection.items() if k in FIELDS}
    return {**public, "disconnected_at": _now_iso(), "disconnect_reason": reason}


def open_connections(fake) -> list[dict]:
    """Every connection X counts: the stand-in's open streams and the stale ones."""
    connections = state(fake)
    with fake._lock:
        live = list(fake.stream_connections.values())
    with connections.lock:
        return live + _live_stale(connections)


@stream_gate
def _connection_limit(fake, handler) -> tuple[int, dict] | None:
    limit = state(fake).limit
    if limit is not None and len(open_connections(fake)) >= limit:
        return 429, PROBLEMS[429]
    return None


def _available(handler) -> bool:
    connections = state(handler.fake)
    with connections.lock:
        connections.requests += 1
        unavailable = connections.unavailable
    if not handler.authorized():
        return False
    if unavailable is not None:
        handler.send_empty(unavailable)
        return False
    return True


@route("GET", "/2/connections")
def list_connections(handler, params: dict) -> None:
    if not _available(handler):
        return
    query = handler.query
    status = (query.get("status") or ["active"])[0]
    endpoints = {e for part in query.get("endpoints", []) for e in part.split(",") if e}
    fields = {f for part in query.get("connection.fields", []) for f in part.split(",") if f}
    fields.add("id")
    connections = state(handler.fake)
    active = open_connections(handler.fake)
    with connections.lock:
        inactive = list(connections.ended)
    chosen = {"active": active, "inactive": inactive, "all": active + inactive}.get(status, active)
    data = [
        {name: conn[name] for name in FIELDS if name in fields and name in conn}
        for conn in chosen
        if not endpoints or conn["endpoint_name"] in endpoints
    ]
    handler.send_json(200, {"data": data, "meta": {"result_count": len(data)}})


def _delete(handler, chosen) -> None:
    """End the connections `chosen(conn)` selects; answer X's kill summary."""
    connections = state(handler.fake)
    now = time.monotonic()
    with connections.lock:
        connections.deletes = [t for t in connections.deletes if now - t < WINDOW] + [now]
        if len(connections.deletes) > DELETE_LIMIT:
            problem = {"title": "Too Many Requests", "detail": "Too Many Requests",
                       "type": "about:blank", "status": 429}  # fmt: skip
            handler.send_json(429, problem, {"x-rate-limit-remaining": "0"})
            return
    results = []
    for conn in open_connections(handler.fake):
        if not chosen(conn):
            continue
        with connections.lock:
            stale = connections.stale.pop(conn["id"], None)
            connections.ended.append(_ended(conn, "TerminatedByClient"))
            connections.deleted += 1
        if stale is None:
            conn["kill"].set()
        results.append({"uuid": conn["id"], "success": True})
    data = {"successful_kills": len(results), "failed_kills": 0, "results": results}
    handler.send_json(200, {"data": data})


@route("DELETE", "/2/connections/all")
def delete_all(handler, params: dict) -> None:
    if _available(handler):
        _delete(handler, lambda conn: True)


@route("DELETE", "/2/connections/{endpoint_id}")
def delete_endpoint(handler, params: dict) -> None:
    if not _available(handler):
        return
    endpoint = params["endpoint_id"]
    if endpoint not in ENDPOINTS:
        message = f"The `endpoint_id` path parameter value [{endpoint}] is not one of [" + (
            ",".join(ENDPOINTS) + "]"
        )
        handler.send_json(400, _invalid_request(message))
        return
    _delete(handler, lambda conn: conn["endpoint_name"] == endpoint)


@route("DELETE", "/2/connections")
def delete_uuids(handler, params: dict) -> None:
    if not _available(handler):
        return
    body = handler.read_json()
    uuids = body.get("uuids") if isinstance(body, dict) else None
    if not isinstance(uuids, list) or not 1 <= len(uuids) <= 100:
        handler.send_json(400, _invalid_request("uuids must hold 1 to 100 connection ids"))
        return
    wanted = {str(u) for u in uuids}
    _delete(handler, lambda conn: conn["id"] in wanted)


@knob("connection_limit")
def _limit(fake, value) -> None:
    state(fake).limit = None if value is None else int(value)


@knob("access_level")
def _access_level(fake, name) -> None:
    connections, rule_length = ACCESS_LEVELS[name]
    fake.rule_max_length = rule_length
    if state(fake).limit is not None:  # the limit is opt-in (see the module docstring)
        state(fake).limit = connections


@knob("stale_connection")
def _stale(fake, seconds) -> None:
    connections = state(fake)
    with connections.lock:
        if not seconds:
            connections.stale.clear()
            return
        conn_id = uuid.uuid4().hex
        connections.stale[conn_id] = {
            "id": conn_id,
            "endpoint_name": "filtered_stream",
            "connected_at": _iso_ago(60),
            "client_ip": "127.0.0.1",
            "expires": time.monotonic() + float(seconds),
        }


@knob("connections_api")
def _api(fake, status) -> None:
    state(fake).unavailable = None if status is None else int(status)


def _iso_ago(seconds: float) -> str:
    return _iso(datetime.now(UTC) - timedelta(seconds=seconds))


@stats_part
def _stats(fake) -> dict:
    connections = fake.ext.get(FAMILY)
    if connections is None:
        return {"connections_deleted": 0, "connections_api_requests": 0}
    with connections.lock:
        return {
            "connections_deleted": connections.deleted,
            "connections_api_requests": connections.requests,
        }
