"""Bad input gets a one-line error and a non-zero exit, and an existing output folder stays as it was."""


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
