"""The output folder OUT: which folder a build may replace, how it is replaced atomically, and the manifest
that marks it as edgepack's and lets ``edgepack run`` notice edited files.

Rules (design section 3, "written atomically"):

* A build replaces only an empty folder or one that an earlier build wrote: it holds ``manifest.json`` (every
  file edgepack wrote, with its SHA-256) and nothing else but what edgepack or OUT's Makefile re-creates
  (``host/``, ``firmware.elf``, ``firmware.size``, ``firmware.map``, ``libmodel.so``). A folder with a file
  edgepack did not write, or with a generated source changed since, is refused in one line; nothing in it
  changes.
* The current folder, a folder that contains it, a regular file, and a path whose parent is a file or cannot
  be written are refused before any work is done.
* The build writes into ``.OUT.building-<pid>-<start>-*/out`` beside OUT (the staging folder names its owner, see
  :mod:`edgepack.proc`) and swaps it in at the end with one atomic ``renameat2(RENAME_EXCHANGE)``; the old
  contents leave with the staging folder. Staging folders of builds that died (SIGKILL, power loss) are
  removed by the next build into the same parent folder.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from . import __version__, proc
from .errors import EdgepackError

MANIFEST = "manifest.json"
# re-created in OUT after a build by the Makefile (make, make host) or by `edgepack run --on host`
DERIVED = {"firmware.elf", "firmware.size", "firmware.map", "libmodel.so"}
CACHE_DIRS = ("host/",)
# what `edgepack run` reads or compiles: everything but the documents about the build
DOCUMENTS = ("report.json", "report.md", "quantization_card.md", "quantization_card.json", "firmware.size",
             "firmware.map")


def _rel_files(folder: Path) -> list:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cached(rel: str) -> bool:
    return rel in DERIVED or rel.startswith(CACHE_DIRS)


def read_manifest(out: Path):
    p = Path(out) / MANIFEST
    try:
        m = json.loads(p.read_text())
        files = m["files"]
        if not isinstance(files, dict):
            raise TypeError
        return m
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        raise EdgepackError(f"{p}: not a readable edgepack manifest; if edgepack wrote this folder, rebuild it "
                            "into a new -o folder") from None


def write_manifest(out: Path, command: str):
    """Record every file now in ``out`` (but the host cache) with its SHA-256."""
    files = {rel: sha256(out / rel) for rel in _rel_files(out) if not rel.startswith(CACHE_DIRS) and rel != MANIFEST}
    (out / MANIFEST).write_text(json.dumps({"edgepack": __version__, "command": command, "files": files},
                                           indent=1) + "\n")


# ---- which folder a build may write ------------------------------------------------------------------------
def check_target(out) -> Path:
    """Refuse an OUT that a build must not replace (see the module docstring); return it as an absolute path.
    Called before any work is done, and again just before the swap."""
    try:
        return _check_target(out)
    except PermissionError as e:
        raise EdgepackError(f"-o {out}: cannot access {e.filename or out} (permission denied); choose another "
                            "-o") from None
    except OSError as e:
        raise EdgepackError(f"-o {out}: cannot use {e.filename or out} ({e.strerror}); choose another -o") from None


def _check_target(out) -> Path:
    given = str(out)
    p = Path(os.path.abspath(out))  # normalises sub/.. and ./
    cwd = Path(os.getcwd())
    if p == cwd or p in cwd.parents:
        what = "the current folder" if p == cwd else f"a folder that contains the current folder ({cwd})"
        raise EdgepackError(f"-o {given}: {p} is {what}; a build replaces its output folder, so give it a folder "
                            "of its own, e.g. -o out/")
    if p.is_symlink():
        raise EdgepackError(f"-o {given}: {p} is a symbolic link; give the folder itself")
    if p.exists() and not p.is_dir():
        raise EdgepackError(f"-o {given}: {p} is a file, not a folder; edgepack leaves it as it is: choose a "
                            "folder name for the build")
    check_parent_writable(p, given)
    if p.is_dir():
        _check_replaceable(p, given)
    return p


def check_parent_writable(p: Path, given: str):
    """The nearest existing folder above ``p`` must be a folder this process can write (one line if not)."""
    anc = Path(p).parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir():
        raise EdgepackError(f"-o {given}: {anc} is a file, so nothing can be made under it; choose another -o")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise EdgepackError(f"-o {given}: cannot write in {anc} (permission denied); choose another -o")


def _check_replaceable(p: Path, given: str):
    try:
        present = _rel_files(p)
    except OSError as e:
        raise EdgepackError(f"-o {given}: cannot read {p} ({e.strerror})") from None
    if not present:
        return
    m = read_manifest(p)
    if m is None:
        raise EdgepackError(f"-o {given}: {p} exists and was not written by edgepack (no {MANIFEST}); edgepack "
                            "replaces only its own output folders: choose another -o (nothing was changed)")
    files = m["files"]
    for rel in present:
        if rel == MANIFEST or _cached(rel):
            continue
        if rel not in files:
            raise EdgepackError(f"-o {given}: {p} holds {rel}, which edgepack did not write; a rebuild would "
                                "delete it: move it out or choose another -o (nothing was changed)")
        if sha256(p / rel) != files[rel]:
            raise EdgepackError(f"-o {given}: {p / rel} was changed after edgepack wrote it; a rebuild would "
                                "overwrite it: move your edits out or choose another -o (nothing was changed)")


def remove_stale_staging(parent: Path) -> list:
    """Remove the staging folders of builds into ``parent`` whose process is gone (SIGKILL, power loss)."""
    return proc.remove_stale(parent, ".*.building-*") if Path(parent).is_dir() else []


class Staging:
    """``with Staging(out) as s:`` write into ``s.dir``; ``s.commit(command)`` swaps it in as OUT. On any
    exception (SIGINT, SIGTERM included) the staging folder and any parent folders it created are removed."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.created = []
        self._made = proc.Recorded()  # the staging folder's name, known before the folder exists

    def __enter__(self):
        try:
            parent = self.out.parent
            missing = []
            while not parent.exists():
                missing.append(parent)
                parent = parent.parent
            for d in reversed(missing):
                d.mkdir()
                self.created.append(d)
            remove_stale_staging(self.out.parent)
            self.dir = proc.make_temp_dir(f".{self.out.name}.building-", self.out.parent, record=self._made) / "out"
            self.dir.mkdir()
        except BaseException:  # __exit__ does not run when __enter__ raises
            self.__exit__(*sys.exc_info())
            raise
        return self

    def commit(self, command: str):
        write_manifest(self.dir, command)
        check_target(self.out)  # the folder may have changed during the build
        if self.out.exists():
            if not _exchange(self.dir, self.out):
                os.rename(self.out, self._made.path / "old")
                os.rename(self.dir, self.out)
        else:
            os.rename(self.dir, self.out)
        self.created = []

    def _clean(self, failed: bool):
        if self._made.path is not None:
            proc.remove_tree(self._made.path)
        if failed:
            for d in reversed(self.created):
                try:
                    d.rmdir()
                except OSError:
                    pass

    def __exit__(self, exc_type, exc, tb):
        late = None
        for _ in range(10):
            try:
                self._clean(exc_type is not None or late is not None)
                break
            except BaseException as e:  # SIGINT / SIGTERM during the clean-up: finish it, then let that stop us
                late = e
        if late is not None:
            raise late
        return False


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        f = libc.renameat2
    except (OSError, AttributeError):
        return False
    f.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    rc = f(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


# ---- edited files, for `edgepack run` -----------------------------------------------------------------------
def edited_files(out: Path) -> list:
    """Files that decide what `run` computes and differ from the manifest: (relative path, what happened)."""
    out = Path(out)
    m = read_manifest(out)
    if m is None:
        return [(MANIFEST, "missing")]
    files = m["files"]
    changed = []
    for rel, digest in files.items():
        if rel in DOCUMENTS:
            continue
        f = out / rel
        if not f.is_file():
            changed.append((rel, "deleted"))
        elif sha256(f) != digest:
            changed.append((rel, "changed"))
    for rel in _rel_files(out):
        if rel not in files and rel != MANIFEST and not _cached(rel) and \
                rel.endswith((".c", ".h", ".json", ".npz", ".ld")):
            changed.append((rel, "added"))
    return changed
