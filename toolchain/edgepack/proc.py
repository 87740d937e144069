"""Child processes (compilers, make, emulators) that never outlive edgepack, and temporary folders that a later
run can recognise as left behind by a dead one.

Every child runs in its own process group with ``PR_SET_PDEATHSIG`` = SIGKILL (Linux): if edgepack is killed,
even by SIGKILL, the kernel kills the child; if edgepack stops on an exception (SIGINT, SIGTERM, a timeout),
the whole group is killed before the exception goes on. ``make`` therefore takes its compilers with it.

Temporary folders name their owner: ``<prefix><pid>-<start>-<12 hex>``, with the process start time from /proc
so that a reused pid is not mistaken for the owner, and they carry the same in an owner file
(``.edgepack-owner``). :func:`remove_stale` deletes the ones whose owner is gone. It judges a folder by its name
only when the folder is empty but for an owner file being written (a process killed between ``mkdir`` and that
write); a folder holding anything else without an owner file that agrees with its name is never touched.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

OWNER_FILE = ".edgepack-owner"
_PR_SET_PDEATHSIG = 1


def _die_with_parent():  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # not Linux: the process-group kill on exceptions still applies
        pass


def _kill_group(p: subprocess.Popen):
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def run(cmd, *, cwd=None, timeout=None, env=None) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` whose process group dies with edgepack and is
    killed on timeout (``subprocess.TimeoutExpired`` is raised after the kill) or on any exception."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        _kill_group(p)
        raise
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


# ---- temporary folders that name their owner ----------------------------------------------------------------
def _stat(pid: int):
    """(state, start time) of a process from /proc, or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]  # fields 3 and 22: state, starttime in clock ticks since boot


def _start_time(pid: int):
    st = _stat(pid)
    return st[1] if st else None


def _alive(pid: int, start) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = _stat(pid)
    if st is None:
        return True  # no /proc: trust kill(0)
    state, now = st
    if state in ("Z", "X"):  # killed, not yet reaped
        return False
    return start is None or now == start


class Recorded:
    """The ``record`` of :func:`make_temp_dir`: ``path`` is the folder it made or is making (None before)."""

    def __init__(self):
        self.path = None

    def __call__(self, path):
        self.path = path


def make_temp_dir(prefix: str, parent=None, record=None) -> Path:
    """A new folder (in ``parent``, default the system temp folder) whose name starts with ``prefix`` and
    holds the owner file; its mode follows the umask like any folder the user would create.

    ``record(path)`` is called with the name *before* the folder is made, so that a caller's clean-up knows it
    whatever instant a SIGINT / SIGTERM exception lands (blocking signals cannot promise that: in a process with
    other threads, torch's or TVM's, the interpreter runs the handler whenever any thread took the signal)."""
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    start = _start_time(os.getpid())
    while True:
        d = parent / f"{prefix}{os.getpid()}-{start or 0}-{secrets.token_hex(6)}"
        if record is not None:
            record(d)
        try:
            d.mkdir(mode=0o700)
            break
        except FileExistsError:  # someone else's: never recorded as ours past this point
            if record is not None:
                record(None)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(d, 0o777 & ~mask)
        (d / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "start": start}))
    except BaseException:
        remove_tree(d)
        raise
    return d


def remove_tree(d: Path, tries: int = 20):
    """``shutil.rmtree`` that outlasts a killed child still writing into ``d`` for a few milliseconds (its
    process group was sent SIGKILL, but a grandchild may not have died yet)."""
    for _ in range(tries):
        shutil.rmtree(d, ignore_errors=True)
        if not os.path.lexists(d):
            return
        time.sleep(0.05)


_NAMED = re.compile(r"(\d+)-(\d+)-[0-9a-f]{12}$")


def _owner(d: Path):
    """(pid, start time) of the process that made ``d``, or None where ``d`` is not ours to judge."""
    m = _NAMED.search(d.name)
    named = (int(m.group(1)), None if m.group(2) == "0" else m.group(2)) if m else None
    try:
        owner = json.loads((d / OWNER_FILE).read_text())
        recorded = int(owner["pid"]), owner.get("start")
    except (OSError, ValueError, KeyError, TypeError):
        recorded = None
    if recorded is not None:
        # the owner file decides; a folder whose name names someone else is left alone
        return recorded if named is None or named[0] == recorded[0] else None
    if named is None:
        return None
    # killed between mkdir and the owner file: only an empty folder (or a half-written owner file) is judged
    # by its name alone
    try:
        held = os.listdir(d)
    except OSError:
        return None
    return named if set(held) <= {OWNER_FILE} else None


def remove_stale(parent, pattern: str) -> list:
    """Delete folders ``parent/pattern`` (a glob) whose owner (see :func:`_owner`) is gone; returns their
    paths. ``parent`` None: the system temp folder."""
    parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        candidates = list(parent.glob(pattern))
    except OSError:
        return removed
    for d in candidates:
        if d.is_symlink() or not d.is_dir():
            continue
        owner = _owner(d)
        if owner is None or _alive(*owner):
            continue
        remove_tree(d)
        removed.append(d)
    return removed
