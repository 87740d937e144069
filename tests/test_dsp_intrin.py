"""firmware/runtime/ep_dsp.h against a Python model of the Arm instructions (tests/armdsp.py): on the host
(portable C) and on every emulated board, where the Cortex-M and armhf builds execute the real SXTB16,
SXTAB16, SMLAD, SMLABB, SMLATT and SSAT instructions (QEMU) and the aarch64 one the portable C."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import armdsp
from edgepack import firmware
from edgepack.boards import get_board
from edgepack.build import RUNTIME_DIR
from edgepack.runners import emulator
from toolchains import require_board_tools

N, OUTS = 160, 21
PROBE = Path(__file__).parent / "c" / "dsp_probe.c"
EDGES = [0, 1, -1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7F7F7F7F, 0x80808080, 0x7FFF7FFF, 0x80008000,
         0x80007FFF, -(2**31), 2**31 - 1, 0x00FF00FF, 0xFF00FF00]


def records():
    rng = np.random.default_rng(15)
    r = rng.integers(-(2**31), 2**31, (N, 3), dtype=np.int64)
    e = np.array(EDGES, np.int64)
    n = len(EDGES)
    r[:n * 3:3, 0] = e  # every edge value as each operand against random and edge partners
    r[1:n * 3:3, 1] = e
    r[2:n * 3:3, 2] = e
    r[3 * n:4 * n, :] = np.stack([e, e[::-1], e], axis=1)
    return ((r + 2**31) % 2**32 - 2**31).astype(np.int32)


def expected(rec):
    out = []
    for i, (a, b, acc) in enumerate(rec.tolist()):
        raw = rec[i].astype("<i4").tobytes()
        off = 1 + (i & 3)
        row = [armdsp.sxtb16(a), armdsp.sxtb16(a, 8), armdsp.sxtab16(a, b), armdsp.sxtab16(a, b, 8),
               armdsp.smlad(a, b, acc), armdsp.smlabb(a, b, acc), armdsp.smlatt(a, b, acc)]
        out.append([v for v in row for _ in (0, 1)]
                   + [armdsp.ssat(acc >> (i & 15), 8), int(np.frombuffer(raw[off:off + 4], "<i4")[0]), 0]
                   + [int(v) for v in np.frombuffer(raw[4 * (i & 1):4 * (i & 1) + 8], "<i4")]
                   + [armdsp.smmulr(a, b)] * 2)
    return np.array(out, np.int64)


def build_probe(board, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(RUNTIME_DIR, folder / "runtime")
    shutil.copy2(PROBE, folder / "model.c")
    (folder / "weights.c").write_text("typedef int ep_empty_unit;\n")
    (folder / "model.h").write_text(
        '#include <stdint.h>\n#include "runtime/ep_runtime.h"\n'
        f"#define EP_PROBE_N {N}\n#define EP_PROBE_OUTS {OUTS}\n"
        f"#define EP_MODEL_INPUT_BYTES {12 * N}\n#define EP_MODEL_OUTPUT_BYTES {4 * OUTS * N}\n"
        "#define EP_MODEL_NUM_LAYERS 1\nint ep_model_run(const int8_t *input, int8_t *output);\n")
    if board["arch"] == "host":
        (folder / "firmware").mkdir()
        shutil.copy2(firmware.FIRMWARE_DIR / "linux" / "main.c", folder / "firmware" / "main.c")
        exe = folder / "probe"
        subprocess.run(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-I", str(folder),
                        str(folder / "model.c"), str(folder / "firmware" / "main.c"), "-o", str(exe)], check=True)
        return exe
    firmware.write_sources(folder, board, "pytest tests/test_dsp_intrin.py")
    r = subprocess.run(["make", "-s", "firmware.elf"], cwd=folder, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + r.stdout
    return folder / "firmware.elf"


def run_probe(board, exe: Path, work: Path) -> np.ndarray:
    rec = records()
    rec.astype("<i4").tofile(work / "input.bin")
    if board["arch"] == "host":
        cmd = [str(exe), str(work / "input.bin"), str(work / "output.bin")]
    else:
        cmd = emulator.command(board, exe, work)
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    return np.fromfile(work / "output.bin", "<i4").reshape(N, OUTS).astype(np.int64)


NATIVE = {"host": None, "cortex-m4": 1, "cortex-m7": 1, "cortex-m33": 1, "rpi4": 0, "rpi-armhf": 1}


@pytest.mark.parametrize("name", list(NATIVE))
def test_intrinsics_equal_arm_semantics(name, tmp_path):
    board = get_board(name) if name == "host" else require_board_tools(name)
    exe = build_probe(board, tmp_path / "probe")
    got = run_probe(board, exe, tmp_path)
    want = expected(records())
    names = ["sxtb16", "sxtb16_c", "sxtb16_ror8", "sxtb16_ror8_c", "sxtab16", "sxtab16_c", "sxtab16_ror8",
             "sxtab16_ror8_c", "smlad", "smlad_c", "smlabb", "smlabb_c", "smlatt", "smlatt_c", "sat8", "ld32", None,
             "ld64a_lo", "ld64a_hi", "smmulr", "smmulr_c"]
    for k, nm in enumerate(names):
        if nm is None:
            continue
        bad = np.flatnonzero(got[:, k] != want[:, k])
        assert bad.size == 0, f"{name}: ep_{nm} differs on {bad.size} records, first {records()[bad[0]]}: " \
                              f"{got[bad[0], k]:#x} != {want[bad[0], k]:#x}"
    if NATIVE[name] is not None:  # the board really runs the instructions (or, on aarch64, the portable C)
        assert set(got[:, 16].tolist()) == {NATIVE[name]}
