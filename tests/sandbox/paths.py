"""Where the sandbox keeps things: the repo, the shared cache, one state directory per sandbox."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_STATE_DIR = REPO / ".sandbox"
SANDBOX_VARS = REPO / "inventory" / "sandbox" / "group_vars" / "all" / "sandbox.yml"
MINIFORGE_VERSION = "sandbox-stand-in"


def cache_dir() -> Path:
    """Built Debian root and wheelhouses, shared by every sandbox here (`down` keeps them)."""
    path = Path(os.environ.get("TWITTERSNAKE_CACHE_DIR", "/var/cache/twittersnake"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def cache_lock(name: str = "") -> Iterator[None]:
    """Serialise builds of one cache entry between concurrent `up`s (a demo and a test run)."""
    with open(cache_dir() / f".lock{name}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
