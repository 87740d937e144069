"""Boards as data, firmware builds, the emulator runner, size limits, missing tools, and the OUT Makefile."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgepack import firmware
from edgepack.boards import all_boards, get_board
from edgepack.build import build
from edgepack.errors import EdgepackError
from edgepack.runners import Model, emulator, reference, run
from toolchains import require_board_tools
from clitools import edgepack

ROOT = Path(__file__).resolve().parents[1]


def test_every_board_is_listed_with_its_numbers():
    r = edgepack("boards")
    assert r.returncode == 0
    for name in ("host", "cortex-m7", "cortex-m4", "cortex-m33", "nucleo-f746zg", "nucleo-h743zi", "rpi4", "rpi5",
                 "rpi-armhf"):
        line = next(ln for ln in r.stdout.splitlines() if ln.split()[0] == name)
        b = get_board(name)
        if b.get("flash_bytes"):
            assert f"{b['flash_bytes'] // 1024} KiB" in line
        if b.get("emulator"):
            assert b["emulator"] in line
    assert get_board("nucleo-f746zg")["flash_bytes"] == 1024 * 1024
    assert get_board("nucleo-f746zg")["ram_bytes"] == 320 * 1024
    assert get_board("nucleo-h743zi")["flash_bytes"] == 2 * 1024 * 1024
    assert get_board("nucleo-f746zg")["pyocd_target"] == "stm32f746zgtx"


def test_adding_a_board_is_adding_a_file(tmp_path, monkeypatch):
    text = (ROOT / "boards" / "cortex-m7.toml").read_text().replace('name = "cortex-m7"', 'name = "my-m7"')
    (tmp_path / "my-m7.toml").write_text(text.replace("ram_bytes = 524288", "ram_bytes = 131072"))
    monkeypatch.setenv("EDGEPACK_BOARDS_PATH", str(tmp_path))
    assert all_boards()["my-m7"]["ram_bytes"] == 131072
    assert "my-m7" in edgepack("boards", env=dict(os.environ)).stdout


def _tiny(tmp_path, shape=(1, 2, 8, 8), model=None):
    torch.manual_seed(0)
    model = model or nn.Sequential(nn.Conv2d(shape[1], 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                   nn.Linear(4 * shape[2] * shape[3], 5)).eval()
    p = tmp_path / "tiny.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(shape),)), p)
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).standard_normal((16,) + shape[1:]).astype(np.float32))
    return p, tmp_path / "calib.npy"


def test_cortex_m7_firmware_sizes_come_from_the_elf(tmp_path):
    require_board_tools("cortex-m7")
    model, calib = _tiny(tmp_path)
    r = build(model, "cortex-m7", tmp_path / "out", calib=calib)
    secs = r["elf_sections"]
    assert r["flash_bytes"] == secs[".text"] + secs.get(".data", 0) + secs.get(".ARM.exidx", 0)
    assert r["ram_bytes"] == secs.get(".data", 0) + secs[".bss"] + secs[".stack"]
    assert r["ram_bytes"] >= r["arena_bytes"] + 8192
    assert (tmp_path / "out" / "firmware.elf").exists()


def test_emulator_reports_instructions_in_total_and_per_layer(tmp_path):
    require_board_tools("cortex-m7")
    model, calib = _tiny(tmp_path)
    out = tmp_path / "out"
    build(model, "cortex-m7", out, calib=calib)
    x = np.random.default_rng(1).standard_normal((3, 2, 8, 8)).astype(np.float32)
    stats = {}
    _, raw = run(out, x, on="emulator", stats=stats)
    assert np.array_equal(raw, run(out, x, on="reference")[1])
    ins, layers = stats["instructions"], stats["layer_instructions"]
    assert ins.shape == (3,) and layers.shape == (3, 2)
    assert (layers > 0).all() and (layers.sum(axis=1) <= ins).all() and (ins < layers.sum(axis=1) * 1.2).all()
    # deterministic: the same input gives the same count
    stats2 = {}
    run(out, x, on="emulator", stats=stats2)
    assert np.array_equal(stats2["instructions"], ins)
    r = edgepack("run", out, "--input", tmp_path / "calib.npy", "--on", "emulator", "--raw", tmp_path / "q.npy")
    assert r.returncode == 0 and "instructions per inference" in r.stdout


def test_model_too_large_for_the_board_fails_with_the_numbers(tmp_path):
    big = nn.Sequential(nn.Flatten(), nn.Linear(1024, 1100)).eval()  # 1,126,400 int8 weights > 1 MiB flash
    model, calib = _tiny(tmp_path, (1, 1, 32, 32), big)
    out = tmp_path / "out"
    out.mkdir()  # an empty folder may take a build; one that fails leaves it as it was
    r = edgepack("build", model, "--board", "nucleo-f746zg", "--calib", calib, "-o", out)
    assert r.returncode != 0
    line = r.stderr.strip()
    assert len(line.splitlines()) == 1
    assert "nucleo-f746zg" in line and "1048576" in line and "flash" in line
    assert f"at least {1100 * 1024} bytes" in line and "before calibration" in line  # int8 weights alone
    assert list(out.iterdir()) == [] and not [p for p in tmp_path.iterdir() if ".building-" in p.name]


def test_arena_too_large_for_the_board_fails_with_the_numbers(tmp_path):
    require_board_tools("nucleo-f746zg")
    wide = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 8, 3, padding=1)).eval()
    model, calib = _tiny(tmp_path, (1, 3, 72, 72), wide)
    with pytest.raises(EdgepackError, match=r"nucleo-f746zg.*RAM, the board has 327680"):
        build(model, "nucleo-f746zg", tmp_path / "out", calib=calib)


def test_missing_cross_toolchain_names_the_package(tmp_path, monkeypatch):
    model, calib = _tiny(tmp_path)
    real = shutil.which
    monkeypatch.setattr(firmware.shutil, "which", lambda t: None if t.startswith("arm-none-eabi") else real(t))
    with pytest.raises(EdgepackError, match="gcc-arm-none-eabi"):
        build(model, "cortex-m7", tmp_path / "out", calib=calib)
    assert not (tmp_path / "out").exists()


def test_missing_emulator_names_the_package(tmp_path, monkeypatch):
    require_board_tools("rpi4")
    model, calib = _tiny(tmp_path)
    out = tmp_path / "out"
    build(model, "rpi4", out, calib=calib)
    real = shutil.which
    monkeypatch.setattr(emulator.shutil, "which", lambda t: None if t == "qemu-aarch64" else real(t))
    with pytest.raises(EdgepackError, match="qemu-user"):
        run(out, np.zeros((1, 2, 8, 8), np.float32), on="emulator")


def test_hung_firmware_is_killed_and_says_so(tmp_path):
    require_board_tools("cortex-m7")
    model, calib = _tiny(tmp_path)
    out = tmp_path / "out"
    build(model, "cortex-m7", out, calib=calib)
    main = out / "firmware" / "main.c"
    main.write_text(main.read_text().replace("int main(void) {", "int main(void) {\n    for (;;) {\n    }"))
    subprocess.run(["make", "-s", "firmware.elf"], cwd=out, check=True, capture_output=True)
    with pytest.raises(EdgepackError, match=r"did not finish .* within 3 s .*killed"):
        emulator.run_raw(Model(out), np.zeros((1, 8, 8, 2), np.int8), timeout=3)


def test_out_makefile_builds_firmware_and_host_library_without_edgepack(tmp_path):
    require_board_tools("cortex-m7")
    model, calib = _tiny(tmp_path)
    out = tmp_path / "out"
    build(model, "cortex-m7", out, calib=calib)
    dropped = tmp_path / "my_project" / "model"
    shutil.copytree(out, dropped)
    env = {"PATH": os.environ["PATH"]}
    subprocess.run(["make", "clean"], cwd=dropped, check=True, env=env, capture_output=True)
    subprocess.run(["make"], cwd=dropped, check=True, env=env, capture_output=True)
    subprocess.run(["make", "host"], cwd=dropped, check=True, env=env, capture_output=True)
    assert (dropped / "firmware.elf").stat().st_size > 0 and (dropped / "libmodel.so").stat().st_size > 0
    x = np.random.default_rng(2).integers(-128, 128, (2, 8, 8, 2)).astype(np.int8)
    m = Model(dropped)
    assert np.array_equal(emulator.run_raw(m, x), reference.run_raw(m, x))


def test_link_time_overflow_reports_what_the_image_needs(tmp_path):
    require_board_tools("nucleo-f746zg")
    # the arena alone fits in 320 KiB, but with the harness's input/output buffers and the stack it does not
    wide = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 8, 3, padding=1)).eval()
    model, calib = _tiny(tmp_path, (1, 3, 68, 68), wide)
    with pytest.raises(EdgepackError, match=r"does not fit nucleo-f746zg: ram needs \d+ bytes, the board has 327680"):
        build(model, "nucleo-f746zg", tmp_path / "out", calib=calib)
