"""Target ``emulator``: the board's firmware under QEMU.

Cortex-M boards run firmware.elf in qemu-system-arm (MPS2 machines) with semihosting for file I/O and
``-icount shift=N``: every instruction advances virtual time by 2^N ns, and the harness reads SysTick, clocked
at the board's ``cpu_hz``, so instructions = ticks * 1e9 / (cpu_hz * 2^N), exactly (to the tick). Linux boards
(Raspberry Pi) run the static binary in qemu-aarch64 / qemu-arm (user mode); they report no counts.
A firmware that does not finish within the timeout is killed, and the run fails saying so.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from .. import proc
from ..errors import EdgepackError

DEFAULT_TIMEOUT_S = 600.0
TIMEOUT_ENV = "EDGEPACK_EMULATOR_TIMEOUT"
TEMP_PREFIX = "ep-emu-"


def timeout_seconds() -> float:
    """The emulator timeout: ``EDGEPACK_EMULATOR_TIMEOUT`` (seconds, > 0) if set, else 600."""
    v = os.environ.get(TIMEOUT_ENV)
    if v is None:
        return DEFAULT_TIMEOUT_S
    try:
        t = float(v)
    except ValueError:
        t = float("nan")
    if not (t > 0 and math.isfinite(t)):
        raise EdgepackError(f"{TIMEOUT_ENV}={v!r}: expected a number of seconds greater than 0 (e.g. 600)")
    return t


def board_of(model) -> dict:
    p = model.out / "board.json"
    if not p.exists():
        raise EdgepackError(f"{model.out}: no board.json; rebuild with edgepack build")
    return json.loads(p.read_text())


def command(board: dict, elf: Path, workdir: Path) -> list:
    if board.get("arch") == "cortex-m":
        return [board["emulator"], "-M", board["emulator_machine"], "-cpu", board["cpu"], "-nographic",
                "-monitor", "none", "-serial", "none", "-semihosting-config", "enable=on,target=native",
                "-icount", f"shift={board.get('icount_shift', 6)}", "-kernel", str(elf)]
    return [board["emulator"], "-cpu", board.get("emulator_cpu", board["cpu"]), str(elf),
            str(workdir / "input.bin"), str(workdir / "output.bin")]


def run_raw(model, xq: np.ndarray, timeout: float | None = None, counts_out: dict | None = None) -> np.ndarray:
    board = board_of(model)
    name = board["name"]
    if not board.get("emulator"):
        raise EdgepackError(f"board {name} has no emulator: run it with --on device, or build for an emulated "
                            "board (edgepack boards lists them)")
    if shutil.which(board["emulator"]) is None:
        raise EdgepackError(f"emulator '{board['emulator']}' not found: install the Debian package "
                            f"{board.get('emulator_package', board['emulator'])}")
    elf = model.out / "firmware.elf"
    if not elf.exists():
        raise EdgepackError(f"{model.out}: no firmware.elf (was the cross toolchain missing at build time?)")
    timeout = timeout_seconds() if timeout is None else timeout
    n = xq.shape[0]
    out_bytes = model.outp.nbytes
    proc.remove_stale(None, TEMP_PREFIX + "*")  # left by runs that were killed
    made = proc.Recorded()  # its name, known before it exists: an interruption cannot leave it unrecorded
    try:
        tmp = proc.make_temp_dir(TEMP_PREFIX, record=made)
        np.ascontiguousarray(xq, dtype=np.int8).tofile(tmp / "input.bin")
        cmd = command(board, elf.resolve(), tmp)
        try:
            r = proc.run(cmd, cwd=tmp, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise EdgepackError(f"{elf}: the firmware did not finish on the {name} emulator within {timeout:g} s "
                                "(hung?); it was killed") from None
        if r.returncode != 0:
            said = " ".join((r.stdout + r.stderr).split())[:300] or f"exit status {r.returncode}"
            raise EdgepackError(f"{elf}: the firmware failed on the {name} emulator: {said}")
        dtype = np.dtype(model.outp.dtype)
        out = np.fromfile(tmp / "output.bin", dtype=np.int8) if (tmp / "output.bin").exists() else np.zeros(0)
        if out.size != n * out_bytes:
            raise EdgepackError(f"{elf}: the firmware wrote {out.size} output bytes on {name}, expected "
                                f"{n * out_bytes}")
        out = out.view(dtype)
        if counts_out is not None and board.get("arch") == "cortex-m":
            ticks = np.fromfile(tmp / "counts.bin", dtype="<u8").reshape(n, -1)
            per_instr_ns = 2 ** board.get("icount_shift", 6)
            instr = np.rint(ticks.astype(np.float64) * 1e9 / board["cpu_hz"] / per_instr_ns).astype(np.int64)
            counts_out["instructions"] = instr[:, 0]
            counts_out["layer_instructions"] = instr[:, 1:]
    finally:
        if made.path is not None:
            proc.remove_tree(made.path)
    return out.reshape((n,) + tuple(model.outp.shape[1:]))
