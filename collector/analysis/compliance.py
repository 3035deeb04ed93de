"""`collector compliance`: X's batch compliance job over the archive's post ids.

    python -m collector compliance --config collector.toml --since 30d
    python -m collector compliance --config collector.toml --from 2026-01-01 --to 2026-12-01
    python -m collector compliance --config collector.toml --all   # the whole archive

X's developer policy asks anyone who stores posts to delete or modify them when they are
deleted, made protected, suspended or have their geotag removed on X, "as soon as reasonably
possible, or within 24 hours" (https://developer.x.com/en/developer-terms/policy). X's batch
compliance endpoints tell which of a list of post ids need such action
(https://docs.x.com/x-api/compliance/batch-compliance/introduction):

1. the period's post ids, from the S3 objects of its `dt=`/`hour=` partitions (with --all,
   every object under `{prefix}/dt=`, listed in one pass over the prefix): an object in
   the report's cache (collector.analysis.loader) is read there, any other is streamed from S3
   once and only its ids are kept, as `{cache}/{bucket}/{key}.ids`;
2. one job per MAX_IDS_PER_JOB ids, one after the other (X runs one job per type at a time):
   POST /2/compliance/jobs {"type": "tweets"} (tweepy's Client), PUT the ids, one a line, to
   the job's upload_url (it expires 15 minutes after the job is made), GET the job until it is
   `complete` (or failed/expired: X's reason is the run's error), GET its download_url;
3. the result, one JSON line per affected id (`id`, `action`, `reason` in X's words:
   deleted, bounced, protected, suspended, scrub_geo; `created_at`, `redacted_at`; our
   `job_id` and `checked_at`), as `{prefix}/_compliance/dt=YYYY-MM-DD/{job_id}.jsonl`
   (`dt` is the day the job completed; an empty object when no id needs action, so every run
   leaves its mark).

One run at a time: a run holds `{spool.dir}/compliance/.lock` (flock); another one started
meanwhile (by hand, while a timer's run is going) ends at once with exit 75 (EX_TEMPFAIL),
naming the holder, and records nothing.

Resumable: the run's ids and each job id are written to `{spool.dir}/compliance/` the moment X
hands the job out, so a run that dies (crash, reboot, timer stopped) is picked up by the next
one: a job still `created` gets its upload, an `in_progress` one is polled, a `complete` one
downloaded. That next run says so, finishes the leftover run first, then checks the period it
was asked for; when the leftover run fails again, it exits 1 saying that the period asked for
was not checked. The last run's outcome is `{spool.dir}/compliance/last_run.json` (with
`last_ok_at`, when the last successful run ended), which `collector status` shows and the
running collector publishes (telemetry.status.compliance_fields: ComplianceRunFailed,
ComplianceRunAge). The deploy runs this command from systemd timers (roles/compliance).

Cost: the compliance endpoints return ids, not posts, so no post read is billed; each run
makes about 3 + polls requests per job (X allows 150 per 15 minutes per app).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger(__name__)

COMPLIANCE_FOLDER = "_compliance"
JOB_TYPE = "tweets"
# X documents no maximum of ids per upload; jobs of this many ids stay far from the upload
# URL's 15 minutes on a slow line (about 2 MB each).
MAX_IDS_PER_JOB = 100_000
POLL_SECONDS = 30.0  # X allows 150 requests per 15 minutes on these endpoints: 1 per 6 s
JOB_TIMEOUT_SECONDS = 6 * 3600.0  # a job X leaves in_progress longer than this fails the run
# Reasons (X's words) that take a post out of every analysis; scrub_geo blanks its geotag.
REMOVED_REASONS = ("deleted", "bounced", "protected", "suspended")
GEO_REASONS = ("scrub_geo",)
RESULT_FIELDS = ("id", "action", "reason", "created_at", "redacted_at", "job_id", "checked_at")
_POST_ID = re.compile(rb'^\{"data":\{"id":"(\d+)"')


class ComplianceError(Exception):
    """X refused or failed a job, or S3 refused an object: one line naming which and why."""


class ComplianceBusy(Exception):
    """Another `collector compliance` holds the spool's compliance state (StateDir.lock)."""


def compliance_prefix(prefix: str) -> str:
    from collector.spool.layout import prefix_path

    return f"{prefix_path(prefix)}{COMPLIANCE_FOLDER}/"


def result_key(prefix: str, day: datetime, job_id: str) -> str:
    return f"{compliance_prefix(prefix)}dt={day:%Y-%m-%d}/{job_id}.jsonl"


def result_key_problem(prefix: str, key: str) -> str | None:
    """Why `key` is not a result key (result_key: X's job ids are letters and digits), or None;
    a listed key is data and names a cache file only in this layout (loader.cache_path)."""
    layout = re.escape(compliance_prefix(prefix)) + r"dt=\d{4}-\d{2}-\d{2}/[A-Za-z0-9_-]+\.jsonl"
    if re.fullmatch(layout, key):
        return None
    expected = f"{compliance_prefix(prefix)}dt=YYYY-MM-DD/{{job_id}}.jsonl"
    return f"not a compliance result key ({expected})"


# ---------------------------------------------------------------- ids of the archive


def ids_in_lines(lines: Iterable[bytes]) -> set[str]:
    """Post ids of stream lines: each line's post (`{"data":{"id":"..."`) and the posts it
    carries in `includes.tweets` (the replied-to, quoted or reposted post, stored with it: X's
    policy covers them as much); lines without one are skipped."""
    ids = set()
    for line in lines:
        match = _POST_ID.match(line)
        if match and b'"tweets":[' not in line:
            ids.add(match[1].decode())
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue  # a malformed line, an error message: the report counts those
        for post in _posts_of(message):
            post_id = post.get("id")
            if isinstance(post_id, str) and post_id.isdigit():
                ids.add(post_id)
    return ids


def _posts_of(message: object) -> list[dict]:
    """The line's post (`data`) and its `includes.tweets`, the dicts among them."""
    if not isinstance(message, dict):
        return []
    includes = message.get("includes")
    included = includes.get("tweets") if isinstance(includes, dict) else None
    posts = [message.get("data"), *(included if isinstance(included, list) else [])]
    return [post for post in posts if isinstance(post, dict)]


def _lines(source, name: str) -> Iterable[bytes]:
    """The lines of an object's bytes (`source` a binary stream), decompressed by its codec."""
    from collector.sink.codecs import codec_of

    stream = codec_of(name).reader(source)
    pending = b""
    while chunk := stream.read(1024 * 1024):
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        yield from lines
    if pending:
        yield pending


def object_ids(s3_client, bucket: str, key: str, size: int, cache_dir: Path) -> set[str]:
    """The post ids one object holds: from the report's cache when it holds the object, else
    from `{key}.ids` in the cache, else read from S3 once (its ids are then kept there)."""
    cached = cache_dir / bucket / key
    if cached.is_file() and cached.stat().st_size == size:
        with cached.open("rb") as raw:
            return ids_in_lines(_lines(raw, key))
    index = cache_dir / bucket / f"{key}.ids"
    if index.is_file():
        head, _, rest = index.read_text().partition("\n")
        if head == f"size {size}":
            return set(rest.split())
    body = s3_client.get_object(Bucket=bucket, Key=key)["Body"]
    with body:
        ids = ids_in_lines(_lines(body, key))
    index.parent.mkdir(parents=True, exist_ok=True)
    tmp = index.with_name(f".{index.name}.part")
    tmp.write_text(f"size {size}\n" + "\n".join(sorted(ids)))
    os.replace(tmp, index)
    return ids


def all_objects(s3_client, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every data object under `{prefix}/dt=` (the whole archive, one listing
    of the prefix rather than one per hour partition)."""
    from collector.sink.codecs import DATA_SUFFIXES
    from collector.spool.layout import prefix_path

    objects = []
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix_path(prefix)}dt="):
        for item in page.get("Contents", []):
            if item["Key"].endswith(DATA_SUFFIXES):
                objects.append((item["Key"], item["Size"]))
    return objects


def archive_ids(
    s3_client, bucket: str, prefix: str, period, cache_dir: Path, progress
) -> tuple[list[str], int]:
    """Sorted unique post ids of the period's objects (loader.list_objects), or of the whole
    archive when `period` is None (all_objects), and how many objects they came from."""
    from collector.analysis import loader

    if period is None:
        objects = all_objects(s3_client, bucket, prefix)
    else:
        objects = loader.list_objects(s3_client, bucket, prefix, period)
    ids: set[str] = set()
    for number, (key, size) in enumerate(objects, 1):
        try:  # a key is data: only the collector's layout names a file in the cache
            loader.cache_path(cache_dir, bucket, prefix, key)
        except loader.UnsafeKey as refused:
            log.warning("skipping s3://%s/%s: %s", bucket, key, refused)
            continue
        ids |= object_ids(s3_client, bucket, key, size, cache_dir)
        progress(f"read {number}/{len(objects)} objects, {len(ids)} post ids")
    return sorted(ids, key=int), len(objects)


def chunks(ids: list[str], size: int) -> list[tuple[int, int]]:
    """[start, end) index ranges of at most `size` ids."""
    return [(start, min(start + size, len(ids))) for start in range(0, len(ids), size)]


# ---------------------------------------------------------------- the run's state on disk


@dataclass
class JobRecord:
    start: int  # index range of the run's ids this job checks
    end: int
    job_id: str | None = None
    status: str = "pending"  # pending, then X's: created, in_progress, complete, failed, expired
    uploaded: bool = False
    results: int | None = None  # ids X listed, once stored in S3
    key: str | None = None


@dataclass
class RunState:
    """A run in progress, kept in `{spool.dir}/compliance/run.json` (ids in run.ids)."""

    run_id: str
    started_at: str
    period_start: str
    period_end: str
    objects: int
    ids: int
    jobs: list[JobRecord] = field(default_factory=list)
    requests: int = 0


class StateDir:
    def __init__(self, spool_dir: Path) -> None:
        self.root = Path(spool_dir) / "compliance"

    @property
    def run_file(self) -> Path:
        return self.root / "run.json"

    @property
    def ids_file(self) -> Path:
        return self.root / "run.ids"

    @property
    def last_run_file(self) -> Path:
        return self.root / "last_run.json"

    def _write(self, path: Path, text: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_text(text)
        os.replace(tmp, path)

    def save(self, run: RunState) -> None:
        self._write(self.run_file, json.dumps(asdict(run), indent=1))

    def load(self) -> RunState | None:
        try:
            doc = json.loads(self.run_file.read_text())
        except FileNotFoundError:
            return None
        jobs = [JobRecord(**job) for job in doc.pop("jobs")]
        return RunState(**doc, jobs=jobs)

    def save_ids(self, ids: list[str]) -> None:
        self._write(self.ids_file, "\n".join(ids))

    def load_ids(self) -> list[str]:
        return self.ids_file.read_text().split()

    def lock(self) -> int:
        """An exclusive flock on `{spool.dir}/compliance/.lock` for this run (released when the
        process ends; the descriptor is returned). Raises ComplianceBusy naming the holder's
        PID when another run holds it: two runs would share run.json."""
        import errno
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise ComplianceBusy(
                f"another compliance run (pid {holder or '?'}) holds {path}; it resumes or ends"
                " the current run: try again when it is done (systemctl is-active "
                "'twittersnake-compliance*' on the instance)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def finish(self, outcome: dict) -> None:
        self._write(self.last_run_file, json.dumps(outcome, indent=1))
        for path in (self.run_file, self.ids_file):
            path.unlink(missing_ok=True)


def read_last_run(spool_dir: Path) -> dict | None:
    """The last finished run (`collector status`), None when none ran."""
    try:
        return json.loads(StateDir(spool_dir).last_run_file.read_text())
    except (FileNotFoundError, ValueError):
        return None


# ---------------------------------------------------------------- X's jobs


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


class Jobs:
    """X's compliance job endpoints through tweepy's Client; signed URLs through requests."""

    def __init__(
        self, api_base_url: str, token: str, run: RunState, token_file: object = ""
    ) -> None:
        import tweepy

        from collector.source.stream import TWEEPY_HOST, _Redirect

        self.client = tweepy.Client(token, return_type=dict)
        self.client.session.mount(TWEEPY_HOST, _Redirect(api_base_url))
        self.run = run
        self.token_file = token_file  # named when X refuses the token (never the token)

    def _call(self, what: str, method, *args, **kwargs) -> dict:
        import requests
        import tweepy

        from collector.source.rules import _one_line

        self.run.requests += 1
        try:
            return method(*args, **kwargs) or {}
        except tweepy.Unauthorized:
            raise ComplianceError(
                f"X compliance jobs: {what}: X refused the bearer token (401 Unauthorized): "
                f"check the token in x.bearer_token_file {self.token_file}"
            ) from None
        except (tweepy.TweepyException, requests.RequestException) as exc:
            raise ComplianceError(f"X compliance jobs: {what}: {_one_line(exc)}") from None

    def create(self, name: str) -> dict:
        body = self._call("create", self.client.create_compliance_job, JOB_TYPE, name=name)
        return body["data"]

    def get(self, job_id: str) -> dict:
        return self._call(f"job {job_id}", self.client.get_compliance_job, job_id)["data"]

    def running(self) -> list[dict]:
        body = self._call("list", self.client.get_compliance_jobs, JOB_TYPE)
        return [j for j in body.get("data") or [] if j.get("status") in ("created", "in_progress")]

    def upload(self, job: dict, ids: list[str]) -> None:
        import requests

        try:
            answer = requests.put(
                job["upload_url"],
                data=("\n".join(ids) + "\n").encode(),
                headers={"Content-Type": "text/plain"},
                timeout=600,
            )
        except requests.RequestException as exc:
            raise ComplianceError(f"job {job['id']}: upload failed: {exc}") from None
        if answer.status_code >= 300:
            raise ComplianceError(
                f"job {job['id']}: the upload URL answered HTTP {answer.status_code} "
                f"({_storage_reason(answer.text)})"
            )

    def download(self, job: dict) -> list[dict]:
        import requests

        try:
            answer = requests.get(job["download_url"], timeout=600)
        except requests.RequestException as exc:
            raise ComplianceError(f"job {job['id']}: download failed: {exc}") from None
        if answer.status_code >= 300:
            raise ComplianceError(
                f"job {job['id']}: the download URL answered HTTP {answer.status_code} "
                f"({_storage_reason(answer.text)})"
            )
        results = []
        for line in answer.content.splitlines():
            if line.strip():
                try:
                    results.append(json.loads(line))
                except ValueError:
                    raise ComplianceError(
                        f"job {job['id']}: a result line is not JSON: {line[:80]!r}"
                    ) from None
        return results


def _storage_reason(text: str) -> str:
    match = re.search(r"<Code>([^<]*)</Code>", text or "")
    return match[1] if match else (text or "no body").strip()[:120]


def job_name(collector_id: str, run_id: str, number: int) -> str:
    return f"twittersnake-{collector_id}-{run_id}-{number}"


# ---------------------------------------------------------------- the run


@dataclass
class Outcome:
    ok: bool
    run_id: str
    started_at: str
    finished_at: str
    period_start: str
    period_end: str
    objects: int
    ids_checked: int
    removed: int
    scrub_geo: int
    jobs: list[str]
    keys: list[str]
    requests: int
    error: str | None = None
    last_ok_at: str | None = None  # the last run that succeeded (this one when ok)


def last_ok_at(state: StateDir) -> str | None:
    """When the last successful run finished, from the last run's record (None: never)."""
    previous = read_last_run(state.root.parent) or {}
    if previous.get("ok"):
        return previous.get("finished_at")
    return previous.get("last_ok_at")


class Runner:
    def __init__(
        self,
        cfg,
        token: str,
        s3_client,
        state: StateDir,
        progress: Callable[[str], None],
        poll_seconds: float = POLL_SECONDS,
        max_ids: int = MAX_IDS_PER_JOB,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.token, self.s3 = cfg, token, s3_client
        self.state, self.progress = state, progress
        self.poll_seconds, self.max_ids = poll_seconds, max_ids
        self.sleep, self.clock = sleep, clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def start(self, period, cache_dir: Path) -> RunState:
        """A new run over `period` (None: the whole archive), or the one a previous process
        left unfinished."""
        run = self.state.load()
        if run is not None:
            self.progress(
                f"resuming run {run.run_id} ({run.ids} ids, "
                f"{sum(j.results is not None for j in run.jobs)}/{len(run.jobs)} jobs done)"
            )
            return run
        ids, objects = archive_ids(
            self.s3, self.cfg.s3.bucket, self.cfg.s3.prefix, period, cache_dir, self.progress
        )
        now = self.now()
        run = RunState(
            run_id=now.strftime("%Y%m%dT%H%M%SZ"),
            started_at=_iso(now),
            period_start=_iso(period.start) if period else "archive",
            period_end=_iso(period.end if period else now),
            objects=objects,
            ids=len(ids),
            jobs=[JobRecord(a, b) for a, b in chunks(ids, self.max_ids)],
        )
        self.state.save_ids(ids)
        self.state.save(run)
        return run

    def execute(self, run: RunState) -> Outcome:
        jobs = Jobs(self.cfg.x.api_base_url, self.token, run, self.cfg.x.bearer_token_file)
        ids = self.state.load_ids() if run.ids else []
        error = None
        try:
            for number, record in enumerate(run.jobs, 1):
                if record.results is None:
                    self._one_job(jobs, run, record, number, ids[record.start : record.end])
        except ComplianceError as exc:
            error = str(exc)
        return self._finish(run, error)

    def _one_job(self, jobs: Jobs, run: RunState, record: JobRecord, number: int, ids) -> None:
        name = job_name(self.cfg.collector_id, run.run_id, number)
        of = f"job {number}/{len(run.jobs)}"
        job = jobs.get(record.job_id) if record.job_id else None
        if job is not None and job["status"] in ("failed", "expired"):
            job, record.uploaded = None, False  # X gave up on it: this run's ids go in a new job
        if job is None:
            # A job X made before a crash that left no id behind carries our name.
            job = next((j for j in jobs.running() if j.get("name") == name), None)
            if job is None:
                job = jobs.create(name)
            record.job_id, record.status = job["id"], job["status"]
            self.state.save(run)  # before anything else: a crash from here on resumes this job
        if job["status"] == "created" and not record.uploaded:
            self.progress(f"{of}: {job['id']} uploading {len(ids)} ids")
            jobs.upload(job, ids)
            record.uploaded = True
            self.state.save(run)
        job = self._wait(jobs, job, of)
        record.status = job["status"]
        results = jobs.download(job)
        record.key, record.results = self._store(job, results)
        self.state.save(run)
        self.progress(f"{of}: {job['id']} complete, {len(results)} of {len(ids)} ids need action")

    def _wait(self, jobs: Jobs, job: dict, of: str) -> dict:
        deadline = self.clock() + JOB_TIMEOUT_SECONDS
        while True:
            job = jobs.get(job["id"])
            status = job.get("status")
            if status == "complete":
                return job
            if status in ("failed", "expired"):
                reason = job.get("error") or (
                    "the upload URL expired before the ids were uploaded"
                    if status == "expired"
                    else "no reason given"
                )
                raise ComplianceError(f"X compliance job {job['id']} {status}: {reason}")
            if self.clock() >= deadline:
                raise ComplianceError(
                    f"X compliance job {job['id']} still {status} after "
                    f"{JOB_TIMEOUT_SECONDS / 3600:.0f} h (the next run picks it up again)"
                )
            self.progress(f"{of}: {job['id']} {status}, next look in {self.poll_seconds:g} s")
            self.sleep(self.poll_seconds)

    def _store(self, job: dict, results: list[dict]) -> tuple[str, int]:
        from botocore.exceptions import BotoCoreError, ClientError

        checked = self.now()
        lines = []
        for result in results:
            row = {name: result.get(name) for name in RESULT_FIELDS}
            row["id"] = str(row["id"])
            row["job_id"], row["checked_at"] = job["id"], _iso(checked)
            lines.append(json.dumps(row, separators=(",", ":")))
        key = result_key(self.cfg.s3.prefix, checked, job["id"])
        body = "".join(line + "\n" for line in lines).encode()
        try:
            # A create, as every put of the collector's key (its policy allows no overwrite).
            self.s3.put_object(
                Bucket=self.cfg.s3.bucket,
                Key=key,
                Body=body,
                ContentType="application/x-ndjson",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "PreconditionFailed":
                raise self._refused(key, exc) from None
            # Stored before a crash lost the record of it: the same job, the same lines.
        except BotoCoreError as exc:
            raise self._refused(key, exc) from None
        return key, len(results)

    def _refused(self, key: str, exc: Exception) -> ComplianceError:
        needed = f"s3:PutObject on {compliance_prefix(self.cfg.s3.prefix)}*"
        return ComplianceError(
            f"s3://{self.cfg.s3.bucket}/{key}: {str(exc).splitlines()[0]} "
            f"(the collector's key needs {needed})"
        )

    def _finish(self, run: RunState, error: str | None) -> Outcome:
        removed = geo = 0
        keys = [j.key for j in run.jobs if j.key]
        if error is None:
            for key in keys:
                body = self.s3.get_object(Bucket=self.cfg.s3.bucket, Key=key)["Body"].read()
                for line in body.splitlines():
                    reason = json.loads(line).get("reason")
                    removed += reason in REMOVED_REASONS
                    geo += reason in GEO_REASONS
        outcome = Outcome(
            ok=error is None,
            run_id=run.run_id,
            started_at=run.started_at,
            finished_at=_iso(self.now()),
            period_start=run.period_start,
            period_end=run.period_end,
            objects=run.objects,
            ids_checked=run.ids if error is None else 0,
            removed=removed,
            scrub_geo=geo,
            jobs=[j.job_id for j in run.jobs if j.job_id],
            keys=keys,
            requests=run.requests,
            error=error,
        )
        outcome.last_ok_at = outcome.finished_at if error is None else last_ok_at(self.state)
        if error is None:
            self.state.finish(asdict(outcome))
        else:
            # The run stays for the next one to resume; status shows this failure meanwhile.
            self.state.save(run)
            self.state._write(self.state.last_run_file, json.dumps(asdict(outcome), indent=1))
        return outcome


# ---------------------------------------------------------------- applied by report and export


@dataclass
class Applied:
    """What the compliance results did to a period's posts (report and export say it).

    removed: posts left out (deleted, bounced, protected, suspended on X: REMOVED_REASONS),
    or, with --include-removed, kept although X reported them; geo_blanked: posts whose
    geotag was blanked (scrub_geo); as_of / job_id: the latest run's completion time and job.
    """

    included: bool
    objects: int = 0
    removed: int = 0
    geo_blanked: int = 0
    as_of: str | None = None
    job_id: str | None = None

    def line(self, prefix_url: str) -> str:
        if not self.objects:
            return (
                f"compliance: no compliance run found under {prefix_url} (run `collector "
                "compliance`); nothing left out"
            )
        run = f"as of the compliance run of {self.as_of} (job {self.job_id})"
        if self.included:
            return (
                f"compliance: NOT applied (--include-removed): {self.removed} posts removed on "
                f"X are included and {self.geo_blanked} geotags kept, {run}"
            )
        return (
            f"compliance: {self.removed} posts left out (deleted, bounced, protected or "
            f"suspended on X), {self.geo_blanked} geotags blanked, {run}"
        )


def list_results(s3_client, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every result object under {prefix}/_compliance/ (every day: a result
    applies to a post whatever day the post was collected)."""
    objects = []
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=compliance_prefix(prefix)):
        for item in page.get("Contents", []):
            if item["Key"].endswith(".jsonl"):
                objects.append((item["Key"], item["Size"]))
    return objects


def cached_results(cache_dir: Path, bucket: str, prefix: str) -> list[Path]:
    from collector.analysis import loader

    folder = cache_dir / bucket / compliance_prefix(prefix)
    paths = sorted(folder.rglob("*.jsonl")) if folder.is_dir() else []
    return loader._in_layout(cache_dir, bucket, prefix, paths, result_key_problem)


def load_results(con, files: list[Path]) -> None:
    """Table `compliance` (id, reason, checked_at, job_id): each id's latest result."""
    con.execute(
        "CREATE OR REPLACE TABLE compliance "
        "(id VARCHAR, reason VARCHAR, checked_at VARCHAR, job_id VARCHAR)"
    )
    if not files:
        return
    paths = "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"
    columns = {"id": "VARCHAR", "reason": "VARCHAR", "checked_at": "VARCHAR", "job_id": "VARCHAR"}
    con.execute(
        f"""INSERT INTO compliance
        SELECT id, arg_max(reason, checked_at), max(checked_at), arg_max(job_id, checked_at)
        FROM read_json({paths}, format='newline_delimited', columns={columns!r})
        WHERE id IS NOT NULL GROUP BY id"""
    )


def apply(con, files: list[Path], include_removed: bool, geo_columns=()) -> Applied:
    """Leave the removed posts out of table `posts` and blank `geo_columns` of scrub_geo posts,
    unless include_removed (then only count them)."""
    load_results(con, files)
    applied = Applied(included=include_removed, objects=len(files))
    if files:
        latest = con.execute(
            "SELECT checked_at, job_id FROM compliance ORDER BY checked_at DESC LIMIT 1"
        ).fetchall()
        if latest:
            applied.as_of, applied.job_id = latest[0]
        else:  # runs that found nothing to do: the newest object's day and job (its name)
            newest = max(files, key=lambda f: (f.parent.name, f.stat().st_mtime))
            applied.job_id = newest.name.removesuffix(".jsonl")
            applied.as_of = newest.parent.name.removeprefix("dt=")
    removed = _sql_list(REMOVED_REASONS)
    geo = _sql_list(GEO_REASONS)
    affected = (
        "SELECT count(*) FROM posts WHERE id IN (SELECT id FROM compliance WHERE reason IN {})"
    )
    applied.removed = con.execute(affected.format(removed)).fetchall()[0][0]
    applied.geo_blanked = con.execute(affected.format(geo)).fetchall()[0][0]
    if not include_removed:
        con.execute(
            f"DELETE FROM posts WHERE id IN (SELECT id FROM compliance WHERE reason IN {removed})"
        )
        if geo_columns:
            blanks = ", ".join(f"{column} = NULL" for column in geo_columns)
            con.execute(
                f"UPDATE posts SET {blanks} "
                f"WHERE id IN (SELECT id FROM compliance WHERE reason IN {geo})"
            )
    return applied


def _sql_list(values: Iterable[str]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def results_for(source, cache_dir: Path, offline: bool) -> list[Path] | None:
    """The result objects in the local cache (downloaded first unless offline); None after
    printing one line when S3 refuses."""
    from collector.analysis import loader

    if offline:
        return cached_results(cache_dir, source.bucket, source.prefix)
    from botocore.exceptions import BotoCoreError, ClientError

    from collector.analysis import options

    s3 = options._s3_client(source)
    try:
        listed = list_results(s3, source.bucket, source.prefix)
        sync = loader.sync_cache(
            s3, source.bucket, source.prefix, None, cache_dir, progress=False, objects=listed,
            key_problem=result_key_problem,
        )  # fmt: skip
    except (BotoCoreError, ClientError) as error:
        print(
            f"error: s3://{source.bucket}/{compliance_prefix(source.prefix)}: {error} "
            "(the compliance results are needed to leave removed posts out; --include-removed "
            "goes without them)",
            file=sys.stderr,
        )
        return None
    for skipped in sync.skipped:
        print(f"skipped compliance object {skipped.file}: {skipped.reason}", file=sys.stderr)
    return sync.paths


# ---------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="the collector's TOML config")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--since", help="period ending now, e.g. 30d (default 30d)")
    when.add_argument("--from", dest="from_time", help="period start, ISO 8601 (UTC if no zone)")
    when.add_argument(
        "--all", action="store_true", help="every object of the archive, whatever its day"
    )
    parser.add_argument("--to", dest="to_time", help="period end, ISO 8601 (default now)")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="object cache (default ~/.cache/twittersnake)"
    )
    parser.add_argument(
        "--max-ids", type=int, default=MAX_IDS_PER_JOB, help=f"ids per job ({MAX_IDS_PER_JOB})"
    )
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=POLL_SECONDS,
        help=f"wait between looks at a running job (default {POLL_SECONDS:g})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")


def _progress(enabled: bool) -> Callable[[str], None]:
    def show(message: str) -> None:
        if enabled:
            print(f"compliance: {message}", file=sys.stderr, flush=True)

    return show


def run(args: argparse.Namespace) -> int:
    from collector.analysis import options
    from collector.config import ConfigError, load_config, read_bearer_token
    from collector.errors import EX_CONFIG, EX_TEMPFAIL

    try:
        cfg = load_config(args.config, streaming=False)
        token = read_bearer_token(cfg)
        if args.all and args.to_time:
            raise ValueError("--to goes with --from, not --all (the whole archive)")
        if not (args.from_time or args.since or args.all):
            args.since = "30d"
        period = None if args.all else options.period_from_args(args)
        if args.max_ids < 1:
            raise ValueError(f"--max-ids {args.max_ids}: expected a number of ids >= 1")
        if args.poll_seconds < 0:
            raise ValueError(f"--poll-seconds {args.poll_seconds:g}: expected seconds >= 0")
        source = options.source_of(cfg)
    except (ConfigError, ValueError) as error:
        print(f"collector: error: {error}", file=sys.stderr)
        return EX_CONFIG
    from collector.telemetry.redact import SECRETS

    SECRETS.add(token)
    try:
        lock = StateDir(cfg.spool.dir).lock()
    except ComplianceBusy as busy:
        print(f"collector: error: {busy}", file=sys.stderr)
        return EX_TEMPFAIL
    except OSError as error:
        print(
            f"collector: error: cannot lock {error.filename or cfg.spool.dir}: {error.strerror} "
            "(run it as the collector's user, who owns spool.dir)",
            file=sys.stderr,
        )
        return 1
    try:
        return _run_locked(args, cfg, token, period, source)
    finally:
        os.close(lock)  # releases the flock


def _run_locked(args: argparse.Namespace, cfg, token: str, period, source) -> int:
    from collector.analysis import loader, options
    from collector.telemetry.redact import SECRETS

    s3 = options._s3_client(source)
    runner = Runner(
        cfg,
        token,
        s3,
        StateDir(cfg.spool.dir),
        _progress(not args.no_progress),
        poll_seconds=args.poll_seconds,
        max_ids=args.max_ids,
    )
    from botocore.exceptions import BotoCoreError, ClientError

    leftover = runner.state.load()
    if leftover is not None:
        # Finished first (its jobs are X's, and the lock is ours now), then the period asked.
        print(
            f"compliance: finishing run {leftover.run_id} ({_period_words(leftover)}), left "
            "unfinished by an earlier run, before the period asked for",
            file=sys.stderr,
            flush=True,
        )
        outcome = runner.execute(leftover)
        if not outcome.ok:
            print(
                f"collector: error: {SECRETS.scrub(outcome.error or '')}; the period asked for "
                f"({_asked_words(period)}) was not checked: the next run finishes run "
                f"{leftover.run_id} first",
                file=sys.stderr,
            )
            return 1
        print(_summary(outcome, cfg.s3.bucket))
    try:
        state = runner.start(period, args.cache_dir or loader.default_cache_dir())
    except (BotoCoreError, ClientError) as error:
        outcome_error = f"s3://{cfg.s3.bucket}: {str(error).splitlines()[0]}"
        runner.state._write(
            runner.state.last_run_file,
            json.dumps(
                {
                    "ok": False,
                    "finished_at": _iso(runner.now()),
                    "error": outcome_error,
                    "last_ok_at": last_ok_at(runner.state),
                }
            ),
        )
        print(f"collector: error: {SECRETS.scrub(outcome_error)}", file=sys.stderr)
        return 1
    outcome = runner.execute(state)
    if not outcome.ok:
        print(f"collector: error: {SECRETS.scrub(outcome.error or '')}", file=sys.stderr)
        return 1
    print(_summary(outcome, cfg.s3.bucket))
    return 0


def _period_words(run: RunState | Outcome) -> str:
    if run.period_start == "archive":
        return f"the whole archive as of {run.period_end}"
    return f"{run.period_start} to {run.period_end}"


def _asked_words(period) -> str:
    return "the whole archive" if period is None else f"{_iso(period.start)} to {_iso(period.end)}"


def _summary(outcome: Outcome, bucket: str) -> str:
    """The line a successful run prints: its period, counts, result objects and requests."""
    if not outcome.jobs:
        return (
            f"compliance run {outcome.run_id} ({_period_words(outcome)}): no post id in its "
            f"{outcome.objects} objects, nothing to check: no job made ({outcome.requests} X API "
            "requests)"
        )
    return (
        f"compliance run {outcome.run_id} ({_period_words(outcome)}): {outcome.ids_checked} "
        f"post ids from {outcome.objects} objects checked in {len(outcome.jobs)} job(s), "
        f"{outcome.removed} removed on X (deleted, protected, suspended, bounced), "
        f"{outcome.scrub_geo} geotags scrubbed; results in "
        f"{', '.join(f's3://{bucket}/{k}' for k in outcome.keys)}"
        f" ({outcome.requests} X API requests; no post reads billed)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="collector compliance", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
