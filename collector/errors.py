"""Every exception the collector raises on purpose, and its exit codes.

Exit codes are the BSD sysexits (`os.EX_*`) where one fits, as supervisord and systemd read them:
    EX_OK (0)        a clean stop
    EX_UNAVAILABLE (69)  a service the command needs cannot be asked: X for `rules sync --check`,
                     DuckDB for `report`/`export` where it is not installed
    EX_SOFTWARE (70) a bug or a condition the collector cannot name (a restart may help)
    EX_TEMPFAIL (75) try again later: another `compliance` run is going on
    EX_NOPERM (77)   S3 refuses these credentials what `purge --apply` needs (an administrator's)
    EX_CONFIG (78)   a condition a restart cannot fix: bad configuration, a token X rejects, a
                     bucket that does not exist, every rule refused
    EX_PIPE_CLOSED (141)  stdout closed by its reader (`collector check | head -1`): 128 + SIGPIPE,
                     the code a shell reports for a Unix tool that stops on a closed pipe
A class's docstring says what raises it and what the caller does with it.
"""

from __future__ import annotations

import os
import signal

EX_OK: int = os.EX_OK
EX_UNAVAILABLE: int = os.EX_UNAVAILABLE
EX_SOFTWARE: int = os.EX_SOFTWARE
EX_TEMPFAIL: int = os.EX_TEMPFAIL
EX_NOPERM: int = os.EX_NOPERM
EX_CONFIG: int = os.EX_CONFIG
EX_PIPE_CLOSED: int = 128 + signal.SIGPIPE
EX_INTERRUPTED: int = 128 + signal.SIGINT  # Ctrl-C


class ConfigError(Exception):
    """A configuration problem, explained in one line a user can act on (exit 78)."""


class ConfigUnreadable(ConfigError):
    """The config file exists but this user may not read it (on the instance it is root's and
    the collector user's group's): `check` says to run it with sudo."""


class Fatal(Exception):
    """A condition a restart cannot fix (exit 78): bad token, missing bucket."""


class RulesError(Exception):
    """The rules endpoint failed (network, 5xx, 429...): worth retrying later."""


class RulesAuthError(RulesError):
    """The X API rejected the token (401) or refused access (403)."""


class XRequestError(Exception):
    """An X API request beside the stream (usage, connections) failed: network, 5xx, 429,
    401. `status` is X's HTTP status (None without an answer); one line in str()."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class XNotAvailable(XRequestError):
    """X answered 404 or 403: the endpoint is not available to this project or access level
    (some pay-per-use projects get an empty 404 from /2/usage/credits)."""


class Held(Exception):
    """Raised by a stage handler: this one file waits (its own backoff); the stage keeps going."""


class BucketMissing(Exception):
    """The configured bucket does not exist (fatal at start: exit 78)."""


class S3Unavailable(Exception):
    """S3 could not be asked (network, 5xx, access denied): retried, never fatal."""


class S3AccessDenied(S3Unavailable):
    """S3 answered 403 to the collector's credentials: retried (a policy can be fixed live)."""


class ChecksumConflict(Held):
    """The object in S3 does not hold the bytes of our file: the file is kept."""


class SpoolLocked(Exception):
    """Another `collector run` holds the spool's lock (exit 78, its status.json left alone)."""
