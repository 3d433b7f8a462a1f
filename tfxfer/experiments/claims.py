"""Claims on runs, so that several processes and hosts sharing one output directory never train the
same network twice: a claim is a file created atomically (O_EXCL) beside the run, holding its
holder's identity and a lease that the holder renews while it works. A claim whose lease has
expired, or whose holder process on this host is gone, is taken over.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from tfxfer.atomic import atomic_write_text

CLAIM_FILE = "claim.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claim:
    """A held claim on one run directory; renews its lease in the background until released."""

    def __init__(self, path: Path, holder: dict, lease_s: float):
        self.path, self.holder, self.lease_s = path, holder, lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)
        self._thread.start()

    def _renew(self):
        while not self._stop.wait(self.lease_s / 3):
            current = read_claim(self.path)
            if current is None or current.get("id") != self.holder["id"]:
                return  # taken over (we were presumed dead): stop touching it
            atomic_write_text(self.path, json.dumps({**self.holder, "expires": time.time() + self.lease_s}))

    def release(self):
        self._stop.set()
        self._thread.join()
        current = read_claim(self.path)
        if current is not None and current.get("id") == self.holder["id"]:
            self.path.unlink(missing_ok=True)
        for marker in self.path.parent.glob(".takeover-*"):
            marker.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def read_claim(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_stale(claim: dict) -> bool:
    """The holder is gone: its lease ran out, or it was a process on this host that has exited."""
    if claim.get("expires", 0) < time.time():
        return True
    return claim.get("host") == socket.gethostname() and not _pid_alive(int(claim.get("pid", -1)))


def try_claim(run_dir: Path, lease_s: float = 120.0) -> Claim | None:
    """Claim `run_dir` for this process, or None if a live holder has it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / CLAIM_FILE
    holder = {"id": uuid.uuid4().hex, "host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            current = read_claim(path)
            if current is None:
                # Half-written by a holder that may have died right after creating it.
                if time.time() - _mtime(path) < lease_s:
                    return None
                current = {"id": f"unreadable-{_mtime(path)}"}
            elif not is_stale(current):
                return None
            # Of several processes taking over the same dead claim, the one that creates this
            # marker wins; the others back off rather than remove the winner's fresh claim.
            try:
                os.close(os.open(run_dir / f".takeover-{current['id']}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return None
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({**holder, "expires": time.time() + lease_s}, f)
        return Claim(path, holder, lease_s)
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()
