"""Corrupted model files (hypothesis: truncation, byte flips, removed archive members) never give a traceback
or leave a partial output folder: `edgepack build` either builds (a corruption that left a valid model) or
fails with one line, and the folder it was told to write is then either absent or a complete build."""

import io
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from edgepack import cli

SETTINGS = settings(max_examples=18, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = torch.zeros(1, 1, 8, 8)
    torch.onnx.export(m, (x,), d / "m.onnx", dynamo=True, external_data=False)
    torch.export.save(torch.export.export(m, (x,)), d / "m.pt2")
    np.save(d / "calib.npy", np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32))
    return d, {"onnx": (d / "m.onnx").read_bytes(), "pt2": (d / "m.pt2").read_bytes()}


def corrupt(data: bytes, how: str, where: float, value: int, kind: str) -> bytes:
    n = len(data)
    i = min(n - 1, int(where * n))
    if how == "truncate":
        return data[:i]
    if how == "flip":
        b = bytearray(data)
        b[i] ^= value or 1
        return bytes(b)
    if how == "flip8":  # eight consecutive bytes
        b = bytearray(data)
        for k in range(i, min(n, i + 8)):
            b[k] ^= (value + k) % 255 + 1
        return bytes(b)
    # "remove": drop one archive member (.pt2), or cut a slice out of the protobuf (.onnx)
    if kind == "pt2":
        zin = zipfile.ZipFile(io.BytesIO(data))
        names = zin.namelist()
        drop = names[int(where * len(names)) % len(names)]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zout:
            for info in zin.infolist():
                if info.filename != drop:
                    zout.writestr(info, zin.read(info.filename))
        return buf.getvalue()
    return data[:i] + data[min(n, i + 1 + value):]


def check(models, kind, how, where, value, tmp_path, capsys):
    d, blobs = models
    bad = tmp_path / f"bad.{kind}"
    bad.write_bytes(corrupt(blobs[kind], how, where, value, kind))
    out = tmp_path / "out"
    rc = cli.main(["build", str(bad), "--board", "host", "--calib", str(d / "calib.npy"), "-o", str(out)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")]
    assert not leftovers, leftovers
    if rc == 0:
        assert (out / "manifest.json").is_file() and (out / "report.json").is_file()
    else:
        lines = err.strip().splitlines()
        assert rc == 1 and len(lines) == 1 and lines[0].startswith("edgepack: error: "), err
        assert not out.exists()


HOW = st.sampled_from(["truncate", "flip", "flip8", "remove"])


@SETTINGS
@given(how=HOW, where=st.floats(0, 0.999), value=st.integers(0, 255))
def test_corrupt_onnx(models, how, where, value, tmp_path_factory, capsys):
    check(models, "onnx", how, where, value, tmp_path_factory.mktemp("c"), capsys)


@SETTINGS
@given(how=HOW, where=st.floats(0, 0.999), value=st.integers(0, 255))
def test_corrupt_pt2(models, how, where, value, tmp_path_factory, capsys):
    check(models, "pt2", how, where, value, tmp_path_factory.mktemp("c"), capsys)
