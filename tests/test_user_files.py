"""No user file is lost, no code runs from a model file, results never silently diverge, and interruptions leave
nothing behind (issue 13, items 1-4 and 8). Every case: the exit code, exactly one line on stderr, no traceback,
and the user's folder, file or OUT byte-identical afterwards (hashed)."""

import hashlib
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from clitools import edgepack, one_line_error
from toolchains import require_board_tools

MARK = "edgepack-payload-ran"


def tree_hash(path: Path) -> str:
    """SHA-256 over every file's relative path, mode and bytes (or of the file itself)."""
    h = hashlib.sha256()
    path = Path(path)
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        h.update(oct(p.stat().st_mode).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def staging_left(parent: Path) -> list:
    return [p.name for p in Path(parent).iterdir() if ".building-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("uf")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.zeros(1, 1, 8, 8)
    torch.onnx.export(m, (x,), d / "m.onnx", dynamo=True, external_data=False)
    torch.export.save(torch.export.export(m, (x,)), d / "m.pt2")
    torch.save(m, d / "pickled.pt")
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32))
    np.save(d / "x.npy", np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32))
    out = d / "out"
    r = edgepack("build", d / "m.onnx", "--calib", d / "calib.npy", "-o", out)
    assert r.returncode == 0, r.stderr
    return d


def edit_one_literal(w: Path) -> str:
    """Change one literal of weights.c (the first bias of the last layer, by a lot); returns the old text."""
    text = w.read_text()
    i = text.index("{\n    ", text.rindex("_bias["))  + len("{\n    ")
    w.write_text(text[:i] + "1000000 + " + text[i:])
    return text


def build_args(d, out, model="m.onnx", board="host"):
    return ("build", d / model, "--board", board, "--calib", d / "calib.npy", "-o", out)


def copy_of_out(files, tmp_path) -> Path:
    """A copy of the fixture's host build (a valid OUT: the same bytes as its manifest says)."""
    import shutil

    return Path(shutil.copytree(files / "out", tmp_path / "out", symlinks=True))


def in_process(capsys, *args):
    """`edgepack ARGS` in this process: (exit code, stderr)."""
    from edgepack import cli

    rc = cli.main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, err


# ---- 1. a folder edgepack did not write is never replaced -------------------------------------------------
def test_users_own_folder_is_refused_and_untouched(files, tmp_path):
    proj = tmp_path / "project"
    proj.mkdir()
    (proj / "notes.txt").write_text("my notes\n")
    (proj / "src").mkdir()
    (proj / "src" / "main.c").write_text("int main(void) { return 0; }\n")
    before = tree_hash(proj)
    line = one_line_error(edgepack(*build_args(files, proj)), str(proj), "not written by edgepack")
    assert "nothing was changed" in line
    assert tree_hash(proj) == before
    assert staging_left(tmp_path) == []


def test_an_earlier_build_with_a_file_added_is_refused(files, tmp_path):
    out = copy_of_out(files, tmp_path)
    (out / "mine.txt").write_text("keep me")
    before = tree_hash(out)
    one_line_error(edgepack(*build_args(files, out)), "mine.txt", "did not write")
    assert tree_hash(out) == before


def test_an_earlier_build_with_an_edited_source_is_refused(files, tmp_path):
    out = copy_of_out(files, tmp_path)
    w = out / "weights.c"
    w.write_text(w.read_text() + "/* my change */\n")
    before = tree_hash(out)
    one_line_error(edgepack(*build_args(files, out)), "weights.c", "changed after edgepack wrote it")
    assert tree_hash(out) == before


def test_an_empty_folder_and_then_an_earlier_build_are_replaced(files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert edgepack(*build_args(files, out)).returncode == 0
    assert (out / "manifest.json").is_file()
    subprocess.run(["make", "-s", "host"], cwd=out, check=True, capture_output=True)  # libmodel.so, edgepack's
    r = edgepack(*build_args(files, out, "m.pt2"))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "report.json").read_text())["model"].endswith("m.pt2")
    assert not (out / "libmodel.so").exists()
    assert staging_left(tmp_path) == []


@pytest.mark.parametrize("given", [".", "sub/..", "CWD", "PARENT"])
def test_the_current_folder_is_refused_before_any_work(files, tmp_path, given):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "keep.txt").write_text("x")
    target = {"CWD": str(work), "PARENT": str(tmp_path)}.get(given, given)
    before = tree_hash(tmp_path)
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "edgepack", *map(str, build_args(files, target))], cwd=work,
                       capture_output=True, text=True)
    line = one_line_error(r, "current folder")
    assert "-o" in line
    assert time.time() - t < 20  # refused at once, not after calibration and code generation
    assert tree_hash(tmp_path) == before


# ---- 2. a file is never turned into a folder ---------------------------------------------------------------
def test_output_that_is_a_file_is_refused_and_kept(files, tmp_path):
    f = tmp_path / "result"
    f.write_bytes(b"precious")
    one_line_error(edgepack(*build_args(files, f)), str(f), "is a file")
    assert f.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result"]


def test_output_under_a_file_is_refused(files, tmp_path):
    f = tmp_path / "afile"
    f.write_bytes(b"precious")
    one_line_error(edgepack(*build_args(files, f / "OUT")), "afile", "is a file")
    assert f.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_read_only_parent_is_refused_before_the_build(files):
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="ep-ro-test-"))  # outside pytest's private (0700) temp folders
    try:
        os.chmod(base, 0o755)
        for f in ("m.onnx", "calib.npy"):
            shutil.copy(files / f, base / f)
        ro = base / "ro"
        ro.mkdir()
        (ro / "keep.txt").write_text("x")
        os.chmod(ro, 0o555)
        cmd = [sys.executable, "-m", "edgepack", *map(str, build_args(base, ro / "OUT"))]
        if os.geteuid() == 0:  # root writes anywhere: run the check as an unprivileged user
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        env = {**os.environ, "HOME": str(base), "EDGEPACK_CACHE": str(base / "cache")}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=base)
        one_line_error(r, str(ro), "permission denied")
        assert sorted(p.name for p in ro.iterdir()) == ["keep.txt"]
    finally:
        os.chmod(base / "ro", 0o755)
        shutil.rmtree(base)


# ---- 3. no code runs from a model file ---------------------------------------------------------------------
class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _torch_pickle(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _pt2_with_payload(src: Path, dst: Path, member: str, marker: Path):
    """Rewrite the archive ``src`` with a __reduce__ payload in one pickled member (or a member that a loader
    reads as a pickle once the archive's config says so)."""
    zin = zipfile.ZipFile(src)
    names = zin.namelist()
    root = names[0].split("/")[0]
    files = {n: zin.read(n) for n in names}
    wcfg, ccfg = f"{root}/data/weights/model_weights_config.json", f"{root}/data/constants/model_constants_config.json"
    evil = _torch_pickle(Payload(marker))
    if member == "sample_inputs":
        files[f"{root}/data/sample_inputs/model.pt"] = evil
    elif member == "pickled_weight":
        cfg = json.loads(files[wcfg])
        first = next(iter(cfg["config"]))
        cfg["config"][first]["use_pickle"] = True
        files[wcfg] = json.dumps(cfg).encode()
        files[f"{root}/data/weights/{cfg['config'][first]['path_name']}"] = evil
    elif member in ("pickled_constant", "custom_object", "opaque_object"):
        cfg = json.loads(files[ccfg])
        name = {"pickled_constant": "tensor_0", "custom_object": "custom_obj_0", "opaque_object": "opaque_obj_0"}[member]
        cfg["config"]["k"]["path_name"] = name
        cfg["config"]["k"]["use_pickle"] = True
        files[ccfg] = json.dumps(cfg).encode()
        files[f"{root}/data/constants/{name}"] = pickle.dumps(Payload(marker)) if member == "opaque_object" else evil
    elif member == "legacy_weights":
        del files[wcfg]
        files[f"{root}/data/weights/model.pt"] = evil
    elif member == "legacy_constants":
        del files[ccfg]
        files[f"{root}/data/constants/model.pt"] = evil
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in files.items():
            z.writestr(n, b)


class WithConstant(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.register_buffer("k", torch.ones(1, 2, 1, 1), persistent=False)

    def forward(self, x):
        return torch.relu(self.conv(x) + self.k)


MEMBERS = ["sample_inputs", "pickled_weight", "pickled_constant", "custom_object", "opaque_object",
           "legacy_weights", "legacy_constants"]


@pytest.fixture(scope="module")
def const_pt2(tmp_path_factory):
    d = tmp_path_factory.mktemp("pt2c")
    torch.export.save(torch.export.export(WithConstant().eval(), (torch.zeros(1, 1, 8, 8),)), d / "c.pt2")
    return d / "c.pt2"


@pytest.mark.parametrize("member", MEMBERS)
def test_pt2_payload_never_runs(const_pt2, tmp_path, member, capsys):
    marker = tmp_path / MARK
    bad = tmp_path / f"{member}.pt2"
    _pt2_with_payload(const_pt2, bad, member, marker)
    if member != "custom_object":  # the payload is live: a plain torch.export.load runs it
        try:
            torch.export.load(str(bad))
        except Exception:
            pass
        assert marker.exists(), f"the {member} payload is not live, so this test would prove nothing"
        marker.unlink()
        capsys.readouterr()  # torch's own log lines of that load
    np.savez(tmp_path / "d.npz", x=np.zeros((64, 1, 8, 8), np.float32), y=np.zeros(64, np.int64))
    for cmd in (("build", bad, "-o", tmp_path / "out"),
                ("prune", bad, "--data", tmp_path / "d.npz", "--target-macs", "0.5", "-o", tmp_path / "p.pt2")):
        rc, err = in_process(capsys, *cmd)
        lines = err.strip().splitlines()
        assert rc == 1 and len(lines) == 1 and bad.name in lines[0] and "refuses" in lines[0], err
        assert not marker.exists(), f"edgepack {cmd[0]} ran the payload in {member}"
    assert not (tmp_path / "out").exists() and not (tmp_path / "p.pt2").exists()


def test_pickled_module_needs_trust_pickle(files, tmp_path, capsys):
    out = tmp_path / "out"
    one_line_error(edgepack(*build_args(files, out, "pickled.pt")), "pickled.pt", "--trust-pickle")
    assert not out.exists()
    r = edgepack(*build_args(files, out, "pickled.pt"), "--trust-pickle")
    assert r.returncode == 0, r.stderr  # input shape taken from --calib
    np.savez(tmp_path / "d.npz", x=np.zeros((64, 1, 8, 8), np.float32), y=np.zeros(64, np.int64))
    rc, err = in_process(capsys, "prune", files / "pickled.pt", "--data", tmp_path / "d.npz", "--target-macs",
                         "0.5", "-o", tmp_path / "p.pt2")
    assert rc == 1 and "--trust-pickle" in err and len(err.strip().splitlines()) == 1, err


# ---- 4. edited generated files -----------------------------------------------------------------------------
def test_run_refuses_an_edited_out(files, tmp_path):
    out = copy_of_out(files, tmp_path)
    w = out / "weights.c"
    text = edit_one_literal(w)
    before = tree_hash(out)
    for on in ("host", "reference"):
        one_line_error(edgepack("run", out, "--input", files / "x.npy", "--on", on), "weights.c",
                       "--allow-edited")
    assert tree_hash(out) == before
    one_line_error(edgepack("run", out, "--input", files / "x.npy", "--on", "reference", "--allow-edited"),
                   "weights.c", "reference")
    r = edgepack("run", out, "--input", files / "x.npy", "--on", "host", "--allow-edited",
                 "--raw", tmp_path / "edited.npy")
    assert r.returncode == 0, r.stderr
    assert "warning" in r.stderr and "weights.c" in r.stderr
    w.write_text(text)  # undone: the manifest matches again and everything runs
    r = edgepack("run", out, "--input", files / "x.npy", "--on", "reference", "--raw", tmp_path / "ref.npy")
    assert r.returncode == 0, r.stderr
    assert not np.array_equal(np.load(tmp_path / "ref.npy"), np.load(tmp_path / "edited.npy"))


def test_allow_edited_remakes_the_firmware_so_host_and_emulator_agree(files, tmp_path):
    require_board_tools("cortex-m7")
    out = tmp_path / "out"
    assert edgepack(*build_args(files, out, board="cortex-m7")).returncode == 0
    edit_one_literal(out / "weights.c")
    one_line_error(edgepack("run", out, "--input", files / "x.npy", "--on", "emulator"), "weights.c")
    raws = {}
    for on in ("host", "emulator"):
        r = edgepack("run", out, "--input", files / "x.npy", "--on", on, "--allow-edited", "--raw",
                     tmp_path / f"{on}.npy")
        assert r.returncode == 0, r.stderr
        raws[on] = np.load(tmp_path / f"{on}.npy")
    assert np.array_equal(raws["host"], raws["emulator"])


# ---- 8. interruptions ----------------------------------------------------------------------------------------
def children(pid: int) -> set:
    """Every descendant of ``pid`` (from /proc), by PID."""
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            for k in kids:
                if k not in found:
                    found.add(k)
                    todo.append(k)
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


def wait_for(cond, timeout=120.0, every=0.05):
    t = time.time()
    while time.time() - t < timeout:
        v = cond()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("timed out waiting")


def start(*args, env=None, cwd=None):
    return subprocess.Popen([sys.executable, "-m", "edgepack", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def test_sigterm_during_build_cleans_up_and_exits_143(files, tmp_path):
    out = copy_of_out(files, tmp_path)
    before = tree_hash(out)
    p = start(*build_args(files, out, "m.pt2"))
    wait_for(lambda: staging_left(tmp_path))  # mid-build: the staging folder exists
    kids = children(p.pid)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "SIGTERM" in lines[0] and "Traceback" not in err, err
    assert tree_hash(out) == before
    assert staging_left(tmp_path) == []
    assert all(gone(k) for k in kids)


def test_sigkill_during_build_leaves_out_and_the_next_build_cleans_up(files, tmp_path):
    out = copy_of_out(files, tmp_path)
    before = tree_hash(out)
    p = start(*build_args(files, out, "m.pt2"))
    wait_for(lambda: staging_left(tmp_path))
    p.kill()
    p.communicate(timeout=60)
    assert tree_hash(out) == before
    assert staging_left(tmp_path), "the killed build left no staging folder: nothing was tested"
    # the next build into the same folder removes it, even one that then fails (here: on its --calib)
    one_line_error(edgepack("build", files / "m.onnx", "--calib", files / "missing.npy", "-o", tmp_path / "other"),
                   "missing.npy")
    assert staging_left(tmp_path) == []
    assert tree_hash(out) == before


@pytest.fixture(scope="module")
def hung(files, tmp_path_factory):
    """A cortex-m7 OUT whose firmware never finishes (edited on purpose: runs need --allow-edited)."""
    require_board_tools("cortex-m7")
    out = tmp_path_factory.mktemp("hung") / "out"
    assert edgepack(*build_args(files, out, board="cortex-m7")).returncode == 0
    main = out / "firmware" / "main.c"
    main.write_text(main.read_text().replace("int main(void) {", "int main(void) {\n    for (;;) {\n    }"))
    subprocess.run(["make", "-s", "firmware.elf"], cwd=out, check=True, capture_output=True)
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_signal_during_emulator_run_kills_qemu(files, hung, tmp_path, sig):
    env = {**os.environ, "TMPDIR": str(tmp_path), "EDGEPACK_EMULATOR_TIMEOUT": "300"}
    p = start("run", hung, "--input", files / "x.npy", "--on", "emulator", "--allow-edited", env=env)
    qemu = wait_for(lambda: [k for k in children(p.pid)
                             if "qemu" in Path(f"/proc/{k}/cmdline").read_bytes().decode(errors="replace")])
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    wait_for(lambda: all(gone(k) for k in qemu), timeout=20)
    temps = [q.name for q in tmp_path.iterdir() if q.name.startswith("ep-emu-")]
    if sig == signal.SIGTERM:
        assert p.returncode == 143
        assert len([ln for ln in err.strip().splitlines() if not ln.startswith("warning:")]) == 1, err
        assert temps == []
    else:
        assert temps, "the killed run left no temporary folder: nothing was tested"
        env["EDGEPACK_EMULATOR_TIMEOUT"] = "1"  # the next run removes it (and times out on this firmware)
        r = edgepack("run", hung, "--input", files / "x.npy", "--on", "emulator", "--allow-edited", env=env)
        assert r.returncode == 1 and "did not finish" in r.stderr.strip().splitlines()[-1], r.stderr
        assert [q.name for q in tmp_path.iterdir() if q.name.startswith("ep-emu-")] == []


def test_sigterm_as_the_staging_folder_is_made_leaves_nothing(tmp_path, monkeypatch):
    """The race CI hit: SIGTERM landing right after mkdtemp, before Staging had recorded the folder (its
    __exit__ does not run when __enter__ raises). The signal is sent from inside make_temp_dir itself."""
    from edgepack import outdir, proc
    from edgepack.cli import _terminate
    from edgepack.errors import Terminated

    made = proc.make_temp_dir

    def make_then_signal(prefix, parent=None, record=None):
        d = made(prefix, parent, record=record)
        os.kill(os.getpid(), signal.SIGTERM)
        return d

    monkeypatch.setattr(proc, "make_temp_dir", make_then_signal)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with pytest.raises(Terminated):
            with outdir.Staging(tmp_path / "new" / "out"):
                raise AssertionError("the build body must not start")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert list(tmp_path.iterdir()) == []  # neither the staging folder nor the parent it created


KILL_BEFORE_OWNER_FILE = """
import os, signal, sys
from pathlib import Path
from edgepack import proc
def killed(self, *a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
Path.write_text = killed
proc.make_temp_dir(".out.building-", sys.argv[1])
"""


def test_sigkill_between_mkdir_and_the_owner_file_is_cleaned_up(tmp_path):
    """The race CI hit next: SIGKILL right after the staging folder's mkdir, before its owner file was written.
    The folder's name names its owner, so the next build removes it."""
    from edgepack import outdir

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-c", KILL_BEFORE_OWNER_FILE, str(tmp_path)], env=env, capture_output=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    left = staging_left(tmp_path)
    assert len(left) == 1 and list((tmp_path / left[0]).iterdir()) == []
    assert [d.name for d in outdir.remove_stale_staging(tmp_path)] == left
    assert staging_left(tmp_path) == []


def _dead_process():
    """(pid, start time) of a process that has exited."""
    from edgepack import proc
    p = subprocess.Popen(["sleep", "30"])
    start = proc._start_time(p.pid)
    p.kill()
    p.wait()
    return p.pid, start


def test_remove_stale_judges_by_name_only_an_empty_folder(tmp_path):
    from edgepack import outdir, proc

    pid, start = _dead_process()
    empty = tmp_path / f".out.building-{pid}-{start}-0123456789ab"
    half = tmp_path / f".out.building-{pid}-{start}-0123456789ac"
    users = tmp_path / f".out.building-{pid}-{start}-0123456789ad"
    alive = tmp_path / f".out.building-{os.getpid()}-{proc._start_time(os.getpid())}-0123456789ae"
    other = tmp_path / f".out.building-{pid}-{start}-0123456789af"
    unnamed = tmp_path / ".out.building-notours"
    for d in (empty, half, users, alive, other, unnamed):
        d.mkdir()
    (half / proc.OWNER_FILE).write_text('{"pi')  # killed while writing the owner file
    (users / "notes.txt").write_text("mine")  # no owner file, but something in it: never judged by its name
    (other / proc.OWNER_FILE).write_text(json.dumps({"pid": os.getpid() + 1, "start": None}))  # disagrees
    removed = {d.name for d in outdir.remove_stale_staging(tmp_path)}
    assert removed == {empty.name, half.name}
    assert (users / "notes.txt").read_text() == "mine"
    assert alive.is_dir() and other.is_dir() and unnamed.is_dir()
