"""Bad input gets a one-line error and a non-zero exit, and an existing output folder stays as it was."""

import json
import os
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch import nn
from clitools import edgepack, one_line_error


class _Cumsum(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, dim=1)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    torch.manual_seed(0)
    good = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    bad = nn.Sequential(nn.Conv2d(1, 4, 3), _Cumsum()).eval()  # an operator edgepack does not import
    x = torch.zeros(1, 1, 8, 8)
    torch.onnx.export(good, (x,), d / "good.onnx", dynamo=True)
    torch.onnx.export(bad, (x,), d / "bad_op.onnx", dynamo=True)
    data = (d / "good.onnx").read_bytes()
    (d / "truncated.onnx").write_bytes(data[: len(data) // 2])
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32))
    out = d / "out"
    r = edgepack("build", d / "good.onnx", "--board", "host", "--calib", d / "calib.npy", "-o", out)
    assert r.returncode == 0, r.stderr
    return d, out


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("model, words", [
    ("truncated.onnx", ["truncated.onnx"]),
    ("bad_op.onnx", ["CumSum", "not supported", "edgepack ops"]),
    ("missing.onnx", ["missing.onnx", "no such file"]),
])
def test_bad_model_leaves_existing_output_untouched(small, model, words):
    d, out = small
    before = snapshot(out)
    r = edgepack("build", d / model, "--board", "host", "--calib", d / "calib.npy", "-o", out)
    one_line_error(r, *words)
    assert snapshot(out) == before
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out.")], "temporary folder left behind"


def test_unknown_board(small):
    d, out = small
    one_line_error(edgepack("build", d / "good.onnx", "--board", "nosuchboard", "-o", out), "nosuchboard")


def test_run_missing_input_file(small):
    d, out = small
    one_line_error(edgepack("run", out, "--input", d / "nothere.npy"), "nothere.npy", "no such file")


def test_run_wrong_input_shape(small):
    d, out = small
    np.save(d / "wrong.npy", np.zeros((2, 3, 8, 8), np.float32))
    one_line_error(edgepack("run", out, "--input", d / "wrong.npy"), "wrong.npy", "(N, 1, 8, 8)")


def test_wrong_calibration_shape(small):
    d, out = small
    np.save(d / "badcal.npy", np.zeros((4, 2, 8, 8), np.float32))
    before = snapshot(out)
    one_line_error(edgepack("build", d / "good.onnx", "--calib", d / "badcal.npy", "-o", out), "badcal.npy")
    assert snapshot(out) == before


def test_run_on_a_folder_that_is_not_a_build(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    one_line_error(edgepack("run", tmp_path, "--input", tmp_path / "x.npy"), "not an edgepack output folder")


# ---- issue 13: NaN / Inf, bad data files, formats no layer takes, the emulator timeout, the minor cases ----
def _export(d, name, model, shape=(1, 1, 8, 8)):
    x = torch.zeros(shape)
    torch.onnx.export(model, (x,), d / f"{name}.onnx", dynamo=True, external_data=False)
    torch.export.save(torch.export.export(model, (x,)), d / f"{name}.pt2")


@pytest.fixture(scope="module")
def nan_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("nan")
    torch.manual_seed(0)
    for name, value in (("nanw", float("nan")), ("infw", float("inf")), ("hugew", 3e35)):
        m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
        with torch.no_grad():
            if name == "hugew":  # on a channel the ReLU always zeroes: the output range stays small
                m[0].bias[1] = -1e4
                m[3].weight[1, 36 + 7] = value
            else:
                m[3].weight[1, 7] = value
        _export(d, name, m)
    return d


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
@pytest.mark.parametrize("name, what", [("nanw", "NaN"), ("infw", "Inf")])
def test_non_finite_weights_name_the_layer(small, nan_models, tmp_path, fmt, name, what):
    d, _ = small
    model = nan_models / f"{name}.{fmt}"
    line = one_line_error(edgepack("build", model, "--calib", d / "calib.npy", "-o", tmp_path / "out"),
                          model.name, what, "linear")
    assert "layer" in line
    assert list(tmp_path.iterdir()) == []


def test_weights_too_large_for_int32_requantization(small, nan_models, tmp_path):
    d, _ = small  # a finite weight of 3e35 (one flipped exponent bit) makes a multiplier int32 cannot hold
    model = nan_models / "hugew.onnx"
    one_line_error(edgepack("build", model, "--calib", d / "calib.npy", "-o", tmp_path / "out"),
                   "node", "int8", "too large")
    assert list(tmp_path.iterdir()) == []


def _bad_arrays(d):
    ok = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    first = ok.copy()
    first[0, 0, 0, 0] = np.nan  # in the very first sample: once silently dropped from the ranges
    later = ok.copy()
    later[3, 0, 2, 5] = np.inf
    np.save(d / "nan_first.npy", first)
    np.save(d / "inf_later.npy", later)
    np.save(d / "empty.npy", np.zeros((0, 1, 8, 8), np.float32))
    np.save(d / "strings.npy", np.array(["a", "b"]))
    np.save(d / "complex.npy", ok.astype(np.complex64))
    np.savez(d / "zipped.npz", x=ok)
    (d / "zipped.npz").rename(d / "zipped.npy")
    (d / "text.npy").write_text("0.1 0.2 0.3\n")


BAD_DATA = [("nan_first.npy", "NaN"), ("inf_later.npy", "Inf"), ("empty.npy", "no samples"),
            ("strings.npy", "not numbers"), ("complex.npy", "complex"), ("zipped.npy", "zip"),
            ("text.npy", "not a .npy file")]


@pytest.mark.parametrize("name, words", BAD_DATA)
def test_bad_calibration_file(small, tmp_path, name, words):
    d, out = small
    _bad_arrays(tmp_path)
    before = snapshot(out)
    one_line_error(edgepack("build", d / "good.onnx", "--calib", tmp_path / name, "-o", out), name, words)
    assert snapshot(out) == before


@pytest.mark.parametrize("name, words", BAD_DATA)
def test_bad_run_input_file(small, tmp_path, name, words):
    d, out = small
    _bad_arrays(tmp_path)
    one_line_error(edgepack("run", out, "--input", tmp_path / name, "--output", tmp_path / "y.npy"), name, words)
    assert not (tmp_path / "y.npy").exists()


def test_nan_in_eval_data(small, tmp_path):
    d, out = small
    x = np.zeros((4, 1, 8, 8), np.float32)
    x[2, 0, 0, 0] = np.nan
    np.savez(tmp_path / "ev.npz", x=x, y=np.zeros(4, np.int64))
    one_line_error(edgepack("build", d / "good.onnx", "--calib", d / "calib.npy", "--eval", tmp_path / "ev.npz",
                            "-o", tmp_path / "o"), "ev.npz", "NaN")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("weights", ["binary", "exp4"])
def test_a_format_no_layer_takes_is_said(small, tmp_path, weights):
    d, _ = small  # good.onnx has two weighted layers, the first and the last: both stay int8
    out = tmp_path / "o"
    r = edgepack("build", d / "good.onnx", "--calib", d / "calib.npy", "-o", out, "--weights", weights)
    assert r.returncode == 0, r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: --weights")]
    assert len(warn) == 1 and "no layer" in warn[0] and "int8" in warn[0], r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert len(rep["warnings"]) == 1 and weights in rep["warnings"][0]
    assert "no layer" in (out / "report.md").read_text()


@pytest.fixture(scope="module")
def m7(small):
    from toolchains import require_board_tools

    require_board_tools("cortex-m7")
    d, _ = small
    out = d / "out_m7"
    r = edgepack("build", d / "good.onnx", "--board", "cortex-m7", "--calib", d / "calib.npy", "-o", out)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("value", ["abc", "", "0", "-5", "nan", "inf"])
def test_malformed_emulator_timeout(small, m7, value):
    d, _ = small
    out = m7
    env = {**os.environ, "EDGEPACK_EMULATOR_TIMEOUT": value}
    r = edgepack("boards", env=env)  # no longer parsed at import: other commands work
    assert r.returncode == 0 and "cortex-m7" in r.stdout
    one_line_error(edgepack("run", out, "--input", d / "calib.npy", "--on", "emulator", env=env),
                   "EDGEPACK_EMULATOR_TIMEOUT")


def test_over_flash_and_ram_reports_both_before_calibration(tmp_path):
    big = nn.Sequential(nn.Conv2d(1, 128, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(128 * 64 * 64, 5)).eval()
    torch.export.save(torch.export.export(big, (torch.zeros(1, 1, 64, 64),)), tmp_path / "big.pt2")
    t = time.time()
    line = one_line_error(edgepack("build", tmp_path / "big.pt2", "--board", "cortex-m7", "-o", tmp_path / "o"),
                          "cortex-m7", "before calibration", "flash", "RAM", "2097152", "524288")
    assert "warning" not in line and time.time() - t < 60
    assert not (tmp_path / "o").exists()


def test_boards_lists_each_toolchain():
    r = edgepack("boards")
    rows = {ln.split()[0]: ln for ln in r.stdout.splitlines()}
    assert "toolchain arm-none-eabi-gcc" in rows["cortex-m7"]
    assert "toolchain aarch64-linux-gnu-gcc" in rows["rpi4"]
    assert "toolchain cc" in rows["host"]


def test_torchscript_takes_its_input_shape_from_calib(small, tmp_path):
    d, _ = small
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    torch.jit.save(torch.jit.trace(m, torch.zeros(1, 1, 8, 8)), tmp_path / "ts.pt")
    one_line_error(edgepack("build", tmp_path / "ts.pt", "-o", tmp_path / "o"), "--input-shape", "--calib")
    r = edgepack("build", tmp_path / "ts.pt", "--calib", d / "calib.npy", "-o", tmp_path / "o")
    assert r.returncode == 0, r.stderr


def test_prune_bad_data_and_flags(small, tmp_path):
    d, _ = small
    np.savez(tmp_path / "wrong.npz", x=np.zeros((64, 3, 8, 8), np.float32), y=np.zeros(64, np.int64))
    np.savez(tmp_path / "ok.npz", x=np.zeros((64, 1, 8, 8), np.float32), y=np.zeros(64, np.int64))
    good = d / "good.onnx"
    one_line_error(edgepack("prune", good, "--data", tmp_path / "wrong.npz", "--target-macs", "0.5", "-o",
                            tmp_path / "p.onnx"), "wrong.npz", "(N, 1, 8, 8)")
    one_line_error(edgepack("prune", good, "--data", tmp_path / "ok.npz", "--target-macs", "1.5", "-o",
                            tmp_path / "p.onnx"), "--target-macs")
    one_line_error(edgepack("prune", good, "--data", tmp_path / "ok.npz", "-o", tmp_path / "p.onnx"),
                   "--target-macs", "--target-params")
    (tmp_path / "mine.onnx").write_bytes(b"my own model")
    one_line_error(edgepack("prune", good, "--data", tmp_path / "ok.npz", "--target-macs", "0.5", "-o",
                            tmp_path / "mine.onnx"), "mine.onnx", "not written by edgepack")
    assert (tmp_path / "mine.onnx").read_bytes() == b"my own model"
    assert not (tmp_path / "p.onnx").exists()


def test_out_follows_the_umask(small, tmp_path):
    d, _ = small
    modes = {}
    for mask in (0o022, 0o077):
        r = subprocess.run(["sh", "-c", f"umask {mask:03o} && exec \"$@\"", "sh", sys.executable, "-m", "edgepack",
                            "build", str(d / "good.onnx"), "--calib", str(d / "calib.npy"), "-o",
                            str(tmp_path / f"o{mask:o}")], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        modes[mask] = stat.S_IMODE((tmp_path / f"o{mask:o}").stat().st_mode)
    assert modes == {0o022: 0o755, 0o077: 0o700}


def test_host_ram_counts_the_arena_once(small):
    _, out = small
    rep = json.loads((out / "report.json").read_text())
    s = rep["object_sizes"]
    assert rep["ram_bytes"] == s["data"] + s["bss"] and s["bss"] >= rep["arena_bytes"]


def test_extreme_picks_hold_the_batch_extremes():
    from edgepack.build import extreme_picks

    x = np.random.default_rng(0).standard_normal((40, 1, 4, 4)).astype(np.float32)
    x[23] *= 50
    x[31] = -9
    picks = extreme_picks(x)
    assert len(picks) == 16 and len(set(picks.tolist())) == 16
    assert {23, 31} <= set(picks.tolist())
    assert extreme_picks(x[:5]).tolist() == [0, 1, 2, 3, 4]
