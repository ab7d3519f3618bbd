"""The status file a running peer keeps for `swarm-peer status`: its PeerState as JSON, one file per process.

Written atomically (a temporary file renamed over the old one), mode 0600 in a 0700 folder, removed on exit.
It holds no key material: the wallet's address and the key file's path at most.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from pydantic import ValidationError

from swarm.apps.view.state import PeerState

STATUS_DIR_ENV = "SWARM_STATUS_DIR"


def status_dir() -> Path:
    """$SWARM_STATUS_DIR, else $XDG_RUNTIME_DIR/swarm, else /tmp/swarm-<uid> (per user, 0700)."""
    if os.environ.get(STATUS_DIR_ENV):
        return Path(os.environ[STATUS_DIR_ENV])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "swarm"
    return Path(tempfile.gettempdir()) / f"swarm-{os.getuid()}"


def status_path(pid: int | None = None, folder: Path | None = None) -> Path:
    return (folder or status_dir()) / f"peer-{os.getpid() if pid is None else pid}.json"


class StatusDirError(OSError):
    """The status folder cannot be trusted (another user owns it, or others may write to it)."""


def prepare_status_dir(folder: Path) -> Path:
    """Create `folder` (0700) or check an existing one: ours, and nobody else may read or write it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise StatusDirError(
            f"status folder {folder} is not private to this user (owner uid {st.st_uid}, mode "
            f"{oct(st.st_mode & 0o777)}): no status file is kept; fix it with `chmod 700 {folder}` or set "
            f"{STATUS_DIR_ENV}"
        )
    return folder


def write_status(path: Path, state: PeerState) -> None:
    """Replace `path` with `state` in one rename, so that a reader never sees half a file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".peer-", suffix=".tmp", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(state.model_dump_json())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_status(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def read_statuses(folder: Path | None = None) -> list[tuple[Path, PeerState | None]]:
    """Every status file in `folder`, parsed (None for one that cannot be read), oldest peer first."""
    folder = folder or status_dir()
    out: list[tuple[Path, PeerState | None]] = []
    for path in sorted(folder.glob("peer-*.json")) if folder.is_dir() else []:
        try:
            if path.stat().st_uid != os.getuid():  # only our own peers' files are believed
                continue
            out.append((path, PeerState.model_validate_json(path.read_text())))
        except (OSError, ValidationError, ValueError):
            out.append((path, None))
    return sorted(out, key=lambda x: x[1].started if x[1] else 0.0)


def is_running(state: PeerState) -> bool:
    """The file's process still runs (and is the same process: started no later than the state says)."""
    import psutil

    try:
        return psutil.Process(state.pid).create_time() <= state.started + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
