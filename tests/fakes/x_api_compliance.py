"""X's batch compliance jobs, as the stand-in answers them (loaded by tests.fakes.x_server).

    POST /2/compliance/jobs {"type": "tweets"|"users", "name"?, "resumable"?} -> {"data": job}
    GET  /2/compliance/jobs/{id}                                            -> {"data": job}
    GET  /2/compliance/jobs?type=tweets[&status=...]                        -> {"data": [job...]}
    PUT  {upload_url}     plain text, one id a line (no bearer token: the URL is signed)
    GET  {download_url}   one JSON line per affected id (no bearer token)

A job is {"id", "type", "name"?, "resumable", "created_at", "upload_url", "upload_expires_at",
"download_url", "download_expires_at", "status", "error"?} with status created | in_progress |
complete | failed | expired. Shapes and lifetimes from X's reference (POST /2/compliance/jobs,
GET /2/compliance/jobs/:id, GET /2/compliance/jobs: docs.x.com/x-api/compliance, and the
batch compliance introduction: "one concurrent job per job type at any time", "The
upload_url expires after 15 minutes", "The download_url expires after one week"); tweepy 4.17
Client.create_compliance_job / get_compliance_job / get_compliance_jobs send exactly these
requests. On X both URLs point at Google Cloud Storage; here they are loopback routes of the
stand-in itself (/_gcs/...), so a client needs no other server.

A result line is {"id", "action": "delete", "created_at", "redacted_at", "reason"}, one per id
that needs action and only those (the format of xdevplatform/compliant-client's README and
X's introduction); reason deleted | bounced | protected | suspended | scrub_geo for posts.

Lifecycle here: created -> (upload) in_progress -> complete after `compliance_polls` GETs of
the job (default 1: the first look after the upload sees it complete). The stand-in's refusals
(their wording is ours, the statuses X's): a second job of a type while one is created or
in_progress: 400 invalid-request naming the running job; an upload after upload_expires_at:
the job is expired and GCS answers 400; an upload of more than `compliance_max_ids` ids (X
documents no figure; the stand-in's default is 100,000 so that splitting can be tested): the
job fails with an error saying so.

Knobs (FakeXServer.control or POST /_fake/control):
    compliance_mark {"ids": [...], "reason": "deleted"}   what X will answer for those post ids
    compliance_clear true                                 forget every mark
    compliance_max_ids N                                  ids one upload may hold
    compliance_polls N                                    GETs of an in_progress job before it
                                                          completes
    compliance_fail_next "reason"                         the next uploaded job fails with it
Stats: compliance_jobs (how many were created), compliance_uploaded_ids, compliance_requests
(calls of the /2/compliance/jobs endpoints: X allows 150 per 15 minutes).
"""

from __future__ import annotations

import itertools
import json
import threading
from datetime import UTC, datetime, timedelta

from tests.fakes.x_server import _invalid_request, _iso, knob, route, stats_part

FAMILY = "compliance"
JOB_TYPES = ("tweets", "users")
POST_REASONS = ("deleted", "bounced", "protected", "suspended", "scrub_geo")
USER_REASONS = ("deleted", "suspended", "protected", "deactivated")
UPLOAD_LIFETIME = timedelta(minutes=15)
DOWNLOAD_LIFETIME = timedelta(days=7)
DEFAULT_MAX_IDS = 100_000
RUNNING = ("created", "in_progress")


class ComplianceState:
    """One server's jobs, uploads and the answers it was told to give."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, dict] = {}
        self.uploads: dict[str, list[str]] = {}  # job id -> ids uploaded
        self.polls: dict[str, int] = {}  # job id -> GETs while in_progress
        self.marks: dict[str, str] = {}  # post id -> reason
        self.redacted_at: dict[str, str] = {}  # post id -> when it was marked
        self.max_ids = DEFAULT_MAX_IDS
        self.polls_to_complete = 1
        self.fail_next: str | None = None
        self.requests = 0
        self.ids = itertools.count(1_460_000_000_000_000_000)


def state(fake) -> ComplianceState:
    with fake._lock:
        return fake.ext.setdefault(FAMILY, ComplianceState())


def _now(fake) -> datetime:
    return datetime.fromtimestamp(fake.clock(), UTC)


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _refresh(fake, st: ComplianceState, job: dict) -> None:
    """Move a job on as time passes: an upload URL not used in time expires the job."""
    if job["status"] == "created" and _now(fake) >= _parse(job["upload_expires_at"]):
        job["status"] = "expired"


def _public(job: dict) -> dict:
    return {k: v for k, v in job.items() if not k.startswith("_")}


# X's endpoints -------------------------------------------------------------------------------


@route("POST", "/2/compliance/jobs")
def create_job(handler, params: dict) -> None:
    if not handler.authorized():
        return
    fake = handler.fake
    st = state(fake)
    body = handler.read_json()
    job_type = body.get("type") if isinstance(body, dict) else None
    if job_type not in JOB_TYPES:
        handler.send_json(400, _invalid_request("type must be one of [tweets, users]"))
        return
    with st.lock:
        st.requests += 1
        for job in st.jobs.values():
            _refresh(fake, st, job)
        running = [j for j in st.jobs.values() if j["type"] == job_type and j["status"] in RUNNING]
        if running:
            message = (
                f"You can have one concurrent job per job type: job {running[0]['id']} "
                f"({job_type}) is {running[0]['status']}"
            )
            handler.send_json(400, _invalid_request(message))
            return
        job_id = str(next(st.ids))
        now = _now(fake)
        job = {
            "id": job_id,
            "type": job_type,
            "resumable": bool(body.get("resumable", False)),
            "created_at": _iso(now),
            "upload_url": f"{fake.url}/_gcs/submission/{job_id}?X-Goog-Expires=900",
            "upload_expires_at": _iso(now + UPLOAD_LIFETIME),
            "download_url": f"{fake.url}/_gcs/delivery/{job_id}?X-Goog-Expires=604800",
            "download_expires_at": _iso(now + DOWNLOAD_LIFETIME),
            "status": "created",
        }
        if body.get("name") is not None:
            job["name"] = str(body["name"])
        st.jobs[job_id] = job
    handler.send_json(200, {"data": _public(job)})


@route("GET", "/2/compliance/jobs/{id}")
def get_job(handler, params: dict) -> None:
    if not handler.authorized():
        return
    fake = handler.fake
    st = state(fake)
    with st.lock:
        st.requests += 1
        job = st.jobs.get(params["id"])
        if job is None:
            handler.send_json(
                400, _invalid_request(f"Could not find compliance job with id: [{params['id']}]")
            )
            return
        _refresh(fake, st, job)
        if job["status"] == "in_progress":
            st.polls[job["id"]] = st.polls.get(job["id"], 0) + 1
            if st.polls[job["id"]] >= st.polls_to_complete:
                job["status"] = "complete"
        answer = _public(job)
    handler.send_json(200, {"data": answer})


@route("GET", "/2/compliance/jobs")
def list_jobs(handler, params: dict) -> None:
    if not handler.authorized():
        return
    fake = handler.fake
    st = state(fake)
    job_type = (handler.query.get("type") or [None])[0]
    status = (handler.query.get("status") or [None])[0]
    if job_type not in JOB_TYPES:
        handler.send_json(
            400, _invalid_request("The `type` query parameter must be one of [tweets, users]")
        )
        return
    with st.lock:
        st.requests += 1
        jobs = []
        for job in st.jobs.values():
            _refresh(fake, st, job)
            if job["type"] == job_type and (status is None or job["status"] == status):
                jobs.append(_public(job))
    body: dict = {"meta": {"result_count": len(jobs)}}
    if jobs:
        body["data"] = sorted(jobs, key=lambda j: j["created_at"], reverse=True)
    handler.send_json(200, body)


# The signed storage URLs (Google Cloud Storage on X) ---------------------------------------


def _send_text(handler, status: int, text: str, content_type: str = "application/xml") -> None:
    payload = text.encode()
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def _gcs_error(code: str, message: str) -> str:
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )


@route("PUT", "/_gcs/submission/{id}")
def upload(handler, params: dict) -> None:
    fake = handler.fake
    st = state(fake)
    length = int(handler.headers.get("Content-Length") or 0)
    text = handler.rfile.read(length).decode("utf-8", "replace")
    with st.lock:
        job = st.jobs.get(params["id"])
        if job is None:
            _send_text(handler, 404, _gcs_error("NoSuchKey", "The specified key does not exist."))
            return
        _refresh(fake, st, job)
        if job["status"] != "created":
            _send_text(
                handler,
                400,
                _gcs_error("ExpiredToken", "Invalid argument: the signed URL expired or was used."),
            )
            return
        ids = [line.strip() for line in text.splitlines() if line.strip()]
        st.uploads[job["id"]] = ids
        if st.fail_next is not None:
            job["status"], job["error"], st.fail_next = "failed", st.fail_next, None
        elif len(ids) > st.max_ids:
            job["status"] = "failed"
            job["error"] = f"The upload holds {len(ids)} ids, more than {st.max_ids} per job"
        else:
            job["status"] = "in_progress"
    _send_text(handler, 200, "", "text/plain")


@route("GET", "/_gcs/delivery/{id}")
def download(handler, params: dict) -> None:
    fake = handler.fake
    st = state(fake)
    with st.lock:
        job = st.jobs.get(params["id"])
        if job is None or job["status"] != "complete":
            _send_text(handler, 404, _gcs_error("NoSuchKey", "The specified key does not exist."))
            return
        if _now(fake) >= _parse(job["download_expires_at"]):
            _send_text(handler, 400, _gcs_error("ExpiredToken", "The signed URL expired."))
            return
        lines = []
        for post_id in st.uploads.get(job["id"], []):
            reason = st.marks.get(post_id)
            if reason is None:
                continue
            created = _created_at(post_id)
            lines.append(
                json.dumps(
                    {
                        "id": post_id,
                        "action": "delete",
                        "created_at": created,
                        "redacted_at": st.redacted_at[post_id],
                        "reason": reason,
                    }
                )
            )
    _send_text(handler, 200, "".join(line + "\n" for line in lines), "application/octet-stream")


def _created_at(post_id: str) -> str:
    """The time a snowflake id holds, in X's format (ids that are not snowflakes: the epoch)."""
    from tests.fakes.x_server import created_at_of

    try:
        return created_at_of(int(post_id)).decode()
    except (ValueError, OverflowError, OSError):
        return "2010-11-04T01:42:54.657Z"


# Knobs and stats ---------------------------------------------------------------------------


@knob("compliance_mark")
def _mark(fake, value: dict) -> None:
    reason = value.get("reason", "deleted")
    if reason not in POST_REASONS:
        raise ValueError(f"compliance_mark: reason {reason!r} is not one of {POST_REASONS}")
    st = state(fake)
    with st.lock:
        for post_id in value.get("ids", []):
            st.marks[str(post_id)] = reason
            st.redacted_at[str(post_id)] = _iso(_now(fake))


@knob("compliance_clear")
def _clear(fake, value: object) -> None:
    st = state(fake)
    with st.lock:
        st.marks.clear()
        st.redacted_at.clear()


@knob("compliance_max_ids")
def _max_ids(fake, value: int) -> None:
    state(fake).max_ids = int(value)


@knob("compliance_polls")
def _polls(fake, value: int) -> None:
    state(fake).polls_to_complete = max(1, int(value))


@knob("compliance_fail_next")
def _fail_next(fake, value: str) -> None:
    state(fake).fail_next = str(value)


@stats_part
def _stats(fake) -> dict:
    st = fake.ext.get(FAMILY)
    if st is None:
        return {"compliance_jobs": 0, "compliance_uploaded_ids": 0, "compliance_requests": 0}
    with st.lock:
        return {
            "compliance_jobs": len(st.jobs),
            "compliance_uploaded_ids": sum(len(ids) for ids in st.uploads.values()),
            "compliance_requests": st.requests,
        }
