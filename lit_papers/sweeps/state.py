"""The state of an offline sweep: `<run_root>/<sweep>/sweep_state.json`, written atomically, and its lock."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from lit_papers.errors import UsageError

STATE_FILE = "sweep_state.json"
LOCK_FILE = ".sweep.lock"


def sweep_hash(cfg: dict) -> str:
    """A fingerprint of the sweep file's content (runner-private `_` keys left out)."""
    return hashlib.sha256(json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")},
                                     sort_keys=True, default=str).encode()).hexdigest()[:16]


def new_state(cfg: dict, sweep_file: Path) -> dict:
    return {"sweep_file": str(sweep_file), "hash": sweep_hash(cfg), "trials": []}


def load_state(folder: Path, cfg: dict, sweep_file: Path) -> dict:
    """The saved state of the sweep in `folder`, or a fresh one; refuses a state of another sweep file."""
    path = folder / STATE_FILE
    if not path.exists():
        return new_state(cfg, sweep_file)
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"{path} is not valid JSON ({err}); move it away to start afresh") from None
    if state.get("hash") != sweep_hash(cfg):
        raise UsageError(f"{sweep_file} changed since the trials in {folder} were run. Keep those trials: "
                         f"run the new file with another --run_root or --name.")
    return state


def save_state(folder: Path, state: dict) -> None:
    tmp = folder / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    tmp.replace(folder / STATE_FILE)  # atomic: a killed sweep never leaves half a state file


def lock(folder: Path):
    """Hold the sweep folder for this runner (released when the process ends, even when killed):
    a second runner on the same folder would propose and run the same trials twice."""
    handle = open(folder / LOCK_FILE, "a+")  # noqa: SIM115  (kept open: the lock lives with the file)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise UsageError(f"another sweep runner is working in {folder}; wait for it to end (or run this one "
                         f"with another --name)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
