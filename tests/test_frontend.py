"""Importers (.pt2, .onnx, TorchScript .pt, pickled nn.Module .pt) and the float executor against torch/onnx.

Run: PYTHONPATH=toolchain .venv/bin/python -m pytest tests/test_frontend.py -q
"""

import hashlib
import warnings
import sys
from pathlib import Path

import numpy as np
import pytest

import torch  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import frontend_models as fm  # noqa: E402
from frontend_models import export  # noqa: E402

from edgepack.errors import EdgepackError  # noqa: E402
from edgepack.frontend import load_model  # noqa: E402
from edgepack.graph import FLOAT_OPS  # noqa: E402
from edgepack.reference.float_exec import run_float, run_float_output  # noqa: E402

torch.set_num_threads(1)

IMG = (1, 3, 12, 12)
MODELS = {  # name -> (class, nominal input shape)
    "ConvZoo": (fm.ConvZoo, IMG),
    "PadDilDw": (fm.PadDilDw, IMG),
    "MeanHead": (fm.MeanHead, IMG),
    "ViewHead": (fm.ViewHead, IMG),
    "MLP": (fm.MLP, (1, 20)),
    "EvalNoOps": (fm.EvalNoOps, IMG),
    "Activations": (fm.Activations, IMG),
    "ConcatSlice": (fm.ConcatSlice, (1, 3, 6, 6)),
}
FORMATS = ["pt2", "onnx_dynamo", "onnx_legacy", "ts_script", "ts_trace", "pickle"]


def _make(cls):
    torch.manual_seed(0)
    return fm.randomize_bn(cls())


def _tol(ref):
    return 1e-4 * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", list(MODELS))
def test_import_matches_torch(name, fmt, tmp_path):
    cls, shape = MODELS[name]
    model = _make(cls)
    path, in_shape = export(model, shape, fmt, tmp_path)
    g = load_model(path, input_shape=in_shape, trust_pickle=fmt == "pickle")

    assert len(g.inputs) == 1 and len(g.outputs) == 1
    assert g.tensors[g.inputs[0]].shape == shape
    assert all(n.op in FLOAT_OPS for n in g.nodes)
    assert not any(n.op == "batchnorm" for n in g.nodes), "batchnorms must be folded"
    src = g.meta["source"]
    assert src["path"] == str(path) and src["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert src["format"] == {"pt2": "pt2", "pickle": "nn.Module"}.get(fmt, fmt.split("_")[0].replace(
        "ts", "torchscript"))
    for t in g.tensors.values():
        if t.is_const:
            assert t.data.dtype == np.float32

    x = np.random.default_rng(1).standard_normal((3,) + shape[1:]).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    y = run_float_output(g, x)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=0, atol=_tol(ref))


def test_ops_and_weights_layout(tmp_path):
    model = _make(fm.ConvZoo)
    path, _ = export(model, IMG, "pt2", tmp_path)
    g = load_model(path)
    convs = [n for n in g.nodes if n.op == "conv2d"]
    assert [g.tensors[n.inputs[1]].shape for n in convs] == [(4, 3, 1, 1), (6, 4, 3, 3), (6, 6, 5, 5), (6, 6, 3, 1)]
    assert convs[1].attrs["strides"] == (2, 2) and convs[1].attrs["pads"] == (1, 1, 1, 1)
    assert convs[3].attrs["pads"] == (1, 0, 1, 0)
    dense = [n for n in g.nodes if n.op == "dense"]
    assert g.tensors[dense[0].inputs[1]].shape == (5, 54)
    assert [n.op for n in g.nodes] == ["conv2d", "relu", "conv2d", "clip", "conv2d", "relu", "conv2d", "maxpool",
                                       "flatten", "dense"]
    # every activation is returned, batch first
    x = np.zeros((2,) + IMG[1:], np.float32)
    acts = run_float(g, x)
    assert set(acts) == {g.inputs[0]} | {n.outputs[0] for n in g.nodes}
    assert all(v.shape[0] == 2 for v in acts.values())


def test_pad_merged_and_depthwise(tmp_path):
    path, _ = export(_make(fm.PadDilDw), IMG, "pt2", tmp_path)
    g = load_model(path)
    ops = [n.op for n in g.nodes]
    assert "pad" not in ops and "identity" not in ops
    c1 = g.nodes[0]
    assert c1.op == "conv2d" and c1.attrs["pads"] == (0, 1, 1, 2) and c1.attrs["dilations"] == (2, 2)
    groups = [n.attrs["group"] for n in g.nodes if n.op == "conv2d"]
    assert groups == [1, 8, 8]
    pools = [n for n in g.nodes if n.op == "avgpool"]
    assert [p.attrs["count_include_pad"] for p in pools] == [False, True]


# ---- hand-built ONNX graphs ----------------------------------------------------------------------------
def _onnx_model(nodes, inits, in_shape, out_name, opset=17, in_name="x"):
    graph = helper.make_graph(
        nodes, "t", [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _check_onnx(m, tmp_path, shape, input_shape=None):
    p = tmp_path / "h.onnx"
    onnx.save(m, str(p))
    g = load_model(p, input_shape=input_shape)
    x = np.random.default_rng(2).standard_normal((3,) + tuple(shape[1:])).astype(np.float32)
    ref = ReferenceEvaluator(m).run(None, {m.graph.input[0].name: x})[0]
    y = run_float_output(g, x)
    np.testing.assert_allclose(y, ref, rtol=0, atol=_tol(ref))
    return g


def test_onnx_conv_pads_autopad_pools(tmp_path):
    r = np.random.default_rng(0)
    w = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[0, 1, 2, 1], strides=[1, 2], name="asym"),
        helper.make_node("Relu", ["a"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2"], ["b"], auto_pad="SAME_UPPER", strides=[2, 2], name="same_up"),
        helper.make_node("Conv", ["b", "w3"], ["c"], auto_pad="SAME_LOWER", dilations=[2, 1], name="same_lo"),
        # (onnx.reference pools with stride 1 read 2-D pads in the wrong order: keep those symmetric here)
        helper.make_node("AveragePool", ["c"], ["d"], kernel_shape=[3, 2], pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("MaxPool", ["d"], ["e"], kernel_shape=[2, 2], pads=[1, 1, 0, 0], strides=[2, 2]),
        helper.make_node("AveragePool", ["e"], ["f"], kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Identity", ["f"], ["f1"]),
        helper.make_node("Conv", ["f1", "wd"], ["g"], group=5, pads=[1, 1, 1, 1], name="dw"),
        helper.make_node("BatchNormalization", ["g", "s", "bb", "mu", "var"], ["h"], epsilon=1e-3),
        helper.make_node("GlobalAveragePool", ["h"], ["y"]),
    ]
    inits = {"w1": w(4, 3, 3, 2), "b1": w(4), "w2": w(5, 4, 3, 3), "w3": w(5, 5, 2, 3), "wd": w(5, 1, 3, 3),
             "s": w(5), "bb": w(5), "mu": w(5), "var": np.abs(w(5)) + 0.5}
    m = _onnx_model(nodes, inits, ["N", 3, 11, 13], "y")
    g = _check_onnx(m, tmp_path, (1, 3, 11, 13))
    assert g.tensors["x"].shape == (1, 3, 11, 13)
    assert g.nodes[0].attrs["pads"] == (0, 1, 2, 1)


def test_onnx_asymmetric_pool_pads(tmp_path):
    """Pool pads [top, left, bottom, right], checked against torch with an explicit F.pad."""
    F = torch.nn.functional
    nodes = [
        helper.make_node("MaxPool", ["x"], ["a"], kernel_shape=[2, 2], pads=[1, 0, 0, 1]),
        helper.make_node("AveragePool", ["a"], ["b"], kernel_shape=[3, 2], pads=[0, 1, 2, 0], count_include_pad=1),
        helper.make_node("AveragePool", ["b"], ["y"], kernel_shape=[2, 3], pads=[1, 2, 0, 1], strides=[1, 2]),
    ]
    p = tmp_path / "pool.onnx"
    onnx.save(_onnx_model(nodes, {}, [1, 2, 7, 8], "y"), str(p))
    g = load_model(p)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((3, 2, 7, 8)).astype(np.float32))
    a = F.max_pool2d(F.pad(x, (0, 1, 1, 0), value=-np.inf), 2, 1)  # F.pad order: left, right, top, bottom
    b = F.avg_pool2d(F.pad(a, (1, 0, 0, 2)), (3, 2), 1)
    ones = F.pad(torch.ones_like(b), (2, 1, 1, 0))
    y = F.avg_pool2d(F.pad(b, (2, 1, 1, 0)), (2, 3), (1, 2)) / F.avg_pool2d(ones, (2, 3), (1, 2))
    np.testing.assert_allclose(run_float_output(g, x.numpy()), y.numpy(), rtol=0, atol=1e-5)


def test_onnx_dense_patterns_and_reshape_chain(tmp_path):
    r = np.random.default_rng(0)
    w = lambda *s: r.standard_normal(s).astype(np.float32)  # noqa: E731
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["a1"]),
        helper.make_node("ReduceMean", ["a1"], ["m"], axes=[2, 3], keepdims=1),
        # torch-style flatten: Shape -> Gather(0) -> Unsqueeze -> Concat([-1]) -> Reshape
        helper.make_node("Shape", ["m"], ["sh"]),
        helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["tgt"], axis=0),
        helper.make_node("Reshape", ["m", "tgt"], ["v"]),
        helper.make_node("MatMul", ["v", "wm"], ["mm"]),
        helper.make_node("Add", ["mm", "bm"], ["d1"]),
        helper.make_node("Relu", ["d1"], ["d2"]),
        helper.make_node("Gemm", ["d2", "wg", "cg"], ["d3"], alpha=0.5, beta=2.0, transB=0),
        helper.make_node("Gemm", ["d3", "wt", "ct"], ["d4"], transB=1),
        helper.make_node("Softmax", ["d4"], ["y"], axis=-1),
    ]
    inits = {"w1": w(6, 3, 3, 3), "lo": np.array(0.0, np.float32), "hi": np.array(2.0, np.float32),
             "zero": np.array(0, np.int64), "ax0": i64(0), "minus1": i64(-1), "wm": w(6, 7), "bm": w(7),
             "wg": w(7, 5), "cg": w(1, 5), "wt": w(4, 5), "ct": w(4)}
    g = _check_onnx(_onnx_model(nodes, inits, [1, 3, 9, 9], "y"), tmp_path, (1, 3, 9, 9))
    assert [n.op for n in g.nodes] == ["conv2d", "clip", "global_avgpool", "flatten", "dense", "relu", "dense",
                                       "dense", "softmax"]
    assert g.tensors[g.nodes[4].inputs[1]].shape == (7, 6)


def test_onnx_old_opset_clip_attrs_and_reducemean_keepdims0(tmp_path):
    r = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"]),
        helper.make_node("Clip", ["a"], ["b"], min=-0.5, max=0.5),
        helper.make_node("Dropout", ["b"], ["c"]),
        helper.make_node("ReduceMean", ["c"], ["y"], axes=[2, 3], keepdims=0),
    ]
    m = _onnx_model(nodes, {"w": r.standard_normal((4, 2, 3, 3)).astype(np.float32)}, [1, 2, 6, 6], "y", opset=10)
    g = _check_onnx(m, tmp_path, (1, 2, 6, 6))
    assert [n.op for n in g.nodes] == ["conv2d", "clip", "global_avgpool", "flatten"]


def test_eval_mode_no_ops_are_dropped(tmp_path):
    path, _ = export(_make(fm.EvalNoOps), IMG, "pt2", tmp_path)
    g = load_model(path)
    assert [n.op for n in g.nodes] == ["conv2d", "relu", "flatten", "dense"]


@pytest.mark.parametrize("op", ["Unsqueeze", "Squeeze"])
def test_onnx_opset9_axes_attribute_folds(op, tmp_path):
    """Opset 9: Unsqueeze / Squeeze take their axes as an attribute; a Shape -> Gather -> Unsqueeze -> Concat ->
    Reshape chain (the legacy exporter's flatten) folds to a constant under the file's own opset."""
    r = np.random.default_rng(0)
    i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
    gather = [helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0)] if op == "Unsqueeze" else \
        [helper.make_node("Gather", ["sh", "zero1"], ["n0"], axis=0),
         helper.make_node("Squeeze", ["n0"], ["n"], axes=[0])]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"]),
        helper.make_node("Shape", ["a"], ["sh"]),
        *gather,
        helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]),
        helper.make_node("Concat", ["n1", "minus1"], ["tgt"], axis=0),
        helper.make_node("Reshape", ["a", "tgt"], ["v"]),
        helper.make_node("Gemm", ["v", "wg", "bg"], ["y"], transB=1),
    ]
    inits = {"w": r.standard_normal((2, 3, 3, 3)).astype(np.float32), "zero": np.array(0, np.int64),
             "zero1": i64(0), "minus1": i64(-1), "wg": r.standard_normal((4, 32)).astype(np.float32),
             "bg": r.standard_normal(4).astype(np.float32)}
    m = _onnx_model(nodes, inits, [1, 3, 6, 6], "y", opset=9)
    g = _check_onnx(m, tmp_path, (1, 3, 6, 6))
    assert [n.op for n in g.nodes] == ["conv2d", "flatten", "dense"]


def test_onnx_input_shape_fills_dynamic_dims(tmp_path):
    r = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    m = _onnx_model(nodes, {"w": r.standard_normal((2, 3, 3, 3)).astype(np.float32)}, ["N", 3, "H", "W"], "y")
    p = tmp_path / "dyn.onnx"
    onnx.save(m, str(p))
    with pytest.raises(EdgepackError, match="--input-shape"):
        load_model(p)
    g = _check_onnx(m, tmp_path, (1, 3, 7, 5), input_shape=(4, 3, 7, 5))
    assert g.tensors["x"].shape == (1, 3, 7, 5)


# ---- errors --------------------------------------------------------------------------------------------
def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.mark.parametrize("fmt", ["pt2", "onnx_dynamo", "ts_script", "pickle"])
def test_unsupported_torch_op(fmt, tmp_path):
    path, shape = export(_make(fm.CumsumNet), IMG, fmt, tmp_path)
    with pytest.raises(EdgepackError) as e:
        load_model(path, input_shape=shape, trust_pickle=fmt == "pickle")
    msg = _one_line(e)
    assert "cumsum" in msg.lower() and "not supported" in msg and "node '" in msg and "`edgepack ops`" in msg
    assert len(msg) < len(str(path)) + 130, msg  # one short line, not the list of every operator


def test_unsupported_names_op_and_node(tmp_path):
    path, _ = export(_make(fm.SortNet), (1, 20), "pt2", tmp_path)
    with pytest.raises(EdgepackError) as e:
        load_model(path)
    msg = _one_line(e)
    assert "operator 'aten.sort.default'" in msg and "node 'sort'" in msg


@pytest.mark.parametrize("op", ["Sin", "Hardmax"])
def test_unsupported_onnx_op(op, tmp_path):
    r = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"]), helper.make_node(op, ["a"], ["y"], name="bad_one")]
    m = _onnx_model(nodes, {"w": r.standard_normal((2, 3, 3, 3)).astype(np.float32)}, [1, 3, 6, 6], "y")
    p = tmp_path / "u.onnx"
    onnx.save(m, str(p))
    with pytest.raises(EdgepackError) as e:
        load_model(p)
    msg = _one_line(e)
    assert msg == (f"{p}: node 'bad_one': operator '{op}' is not supported by edgepack (`edgepack ops` lists the "
                   "supported operators)")


def test_ops_listing_is_the_dispatch_tables(capsys):
    """`edgepack ops` prints the tables the importers dispatch through: every handled operator, with weights."""
    from edgepack.cli import main
    from edgepack.frontend.onnx_frontend import ONNX_OPS, _Importer
    from edgepack.frontend.torch_frontend import TORCH_OPS, _Walker

    assert main(["ops"]) == 0
    text = capsys.readouterr().out
    for table, cls in ((ONNX_OPS, _Importer), (TORCH_OPS, _Walker)):
        assert table.title in text
        for name, info in table.items():
            assert callable(getattr(cls, info.method)), name
            assert name in text
    # no handler method outside the tables
    for cls, table in ((_Importer, ONNX_OPS), (_Walker, TORCH_OPS)):
        methods = {i.method for i in table.values()}
        assert {m for m in vars(cls) if m.startswith("op_")} <= methods
    conv = text[text.index("  Conv\n"):]
    assert conv.splitlines()[1].strip().startswith("weights: int8, sparse, exp2..exp8, pow2-2..pow2-6, binary")
    for op in ("Concat", "HardSwish", "Sigmoid", "Mul", "Split", "PRelu", "Pad", "Sum", "Sub"):
        assert op in ONNX_OPS
    for op in ("cat", "hardswish", "silu", "mul", "chunk", "slice", "dropout_", "feature_dropout", "alpha_dropout",
               "clone", "contiguous", "detach", "prelu", "gelu", "leaky_relu", "elu", "tanh"):
        assert op in TORCH_OPS


@pytest.mark.parametrize("fmt", ["pt2", "onnx_dynamo"])
def test_ceil_mode_is_refused(fmt, tmp_path):
    path, _ = export(_make(fm.CeilPool), IMG, fmt, tmp_path)
    with pytest.raises(EdgepackError, match="ceil_mode") as e:
        load_model(path)
    _one_line(e)


def test_truncated_onnx(tmp_path):
    path, _ = export(_make(fm.ConvZoo), IMG, "onnx_legacy", tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "half.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgepackError, match="not a valid ONNX model") as e:
        load_model(bad)
    _one_line(e)


def test_missing_file(tmp_path):
    for name in ("nope.onnx", "nope.pt2", "nope.pt"):
        with pytest.raises(EdgepackError, match="no such file"):
            load_model(tmp_path / name)


def test_bad_torch_files(tmp_path):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(EdgepackError, match="not a valid torch.export") as e:
        load_model(junk)
    _one_line(e)
    junk_pt = tmp_path / "junk.pt"
    junk_pt.write_bytes(b"\x80\x02garbage")
    with pytest.raises(EdgepackError, match="not a valid PyTorch file") as e:
        load_model(junk_pt, input_shape=IMG)
    _one_line(e)
    sd = tmp_path / "sd.pt"
    torch.save(fm.ConvZoo().state_dict(), str(sd))
    with pytest.raises(EdgepackError, match="state_dict") as e:
        load_model(sd, input_shape=IMG)
    _one_line(e)


@pytest.mark.parametrize("fmt", ["ts_trace", "pickle"])
def test_shape_required(fmt, tmp_path):
    path, _ = export(_make(fm.MeanHead), IMG, fmt, tmp_path)
    with pytest.raises(EdgepackError, match="--input-shape") as e:
        load_model(path, trust_pickle=fmt == "pickle")
    _one_line(e)


def test_run_float_rejects_wrong_input(tmp_path):
    path, _ = export(_make(fm.MeanHead), IMG, "pt2", tmp_path)
    g = load_model(path)
    with pytest.raises(EdgepackError, match="does not match"):
        run_float(g, np.zeros((2, 3, 10, 12), np.float32))
    # a single sample without batch dimension is accepted
    assert run_float_output(g, np.zeros(IMG[1:], np.float32)).shape == (1, 4)


# ---- batch handling and the TorchScript fallback -------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pt2", "onnx_dynamo", "onnx_legacy"])
def test_exported_with_batch_3(fmt, tmp_path):
    """A file exported at batch 3 imports with batch 1; reshapes keep the batch at dim 0."""
    model = _make(fm.ViewHead)
    path, _ = export(model, (3,) + IMG[1:], fmt, tmp_path)
    g = load_model(path)
    assert g.tensors[g.inputs[0]].shape == IMG
    x = np.random.default_rng(4).standard_normal((5,) + IMG[1:]).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_float_output(g, x), ref, rtol=0, atol=_tol(ref))


def test_pt2_dynamic_batch(tmp_path):
    model = _make(fm.ViewHead)
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(model, (torch.zeros((2,) + IMG[1:]),), dynamic_shapes=({0: batch},))
    p = tmp_path / "dyn.pt2"
    torch.export.save(ep, str(p))
    g = load_model(p)
    assert g.tensors[g.inputs[0]].shape == IMG
    x = np.random.default_rng(5).standard_normal((3,) + IMG[1:]).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_float_output(g, x), ref, rtol=0, atol=_tol(ref))


def test_torchscript_onnx_fallback(tmp_path, monkeypatch):
    """Where TS2EPConverter fails, TorchScript goes through the TorchScript ONNX exporter."""
    import torch._export.converter as conv

    class Broken:
        def __init__(self, *a, **k):
            raise RuntimeError("converter cannot handle this module")

    monkeypatch.setattr(conv, "TS2EPConverter", Broken)
    model = _make(fm.PadDilDw)
    path, shape = export(model, IMG, "ts_trace", tmp_path)
    g = load_model(path, input_shape=shape)
    assert g.meta["source"]["format"] == "torchscript"
    x = np.random.default_rng(6).standard_normal((3,) + IMG[1:]).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_float_output(g, x), ref, rtol=0, atol=_tol(ref))


def test_onnx_sum_comparisons_and_where(tmp_path):
    """ONNX Sum (n-ary) of three activations; Greater / Where / Log on one input (what exporters emit for
    softplus's threshold) fold into one lookup table after quantization."""
    from edgepack.compress.quantize import quantize

    r = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Sigmoid", ["a"], ["s"]),
        helper.make_node("Sum", ["a", "r", "s"], ["t"]),
        helper.make_node("Greater", ["t", "thr"], ["c"]),
        helper.make_node("Exp", ["t"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["e1"]),
        helper.make_node("Log", ["e1"], ["sp"]),
        helper.make_node("Where", ["c", "t", "sp"], ["y"]),
    ]
    inits = {"w": r.standard_normal((4, 3, 3, 3)).astype(np.float32), "thr": np.array(1.5, np.float32),
             "one": np.array(1.0, np.float32)}
    g = _check_onnx(_onnx_model(nodes, inits, [1, 3, 5, 5], "y"), tmp_path, (1, 3, 5, 5))
    assert [n.op for n in g.nodes] == ["conv2d", "relu", "sigmoid", "sum", "greater", "exp", "add", "log", "where"]
    q = quantize(g, r.standard_normal((8, 3, 5, 5)).astype(np.float32))
    assert [n.op for n in q.nodes] == ["conv2d_s8", "clamp_s8", "lut_s8", "add_s8", "lut_s8"]
    assert len(q.nodes[3].inputs) == 3 and q.nodes[3].attrs["signs"] == [1, 1, 1]
    assert q.nodes[4].attrs["function"].startswith("where(greater(x, 1.5)")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_legacy_onnx_decompositions_become_one_table_each(approximate, tmp_path):
    """The legacy exporter at opset 13 writes GELU as Div / Erf / Add / Mul / Mul (or the tanh form's Mul / Add /
    Tanh chain), HardSwish as HardSigmoid * x and SiLU as Sigmoid * x: each chain imports exactly and is one
    lookup table after quantization."""
    from edgepack.compress.quantize import quantize

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.GELU(approximate=approximate),
                            torch.nn.Conv2d(4, 2, 1), torch.nn.Hardswish(), torch.nn.Conv2d(2, 2, 1),
                            torch.nn.SiLU()).eval()
    p = tmp_path / "g.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(1, 3, 8, 8),), str(p), dynamo=False, opset_version=13)
    assert "Gelu" not in {n.op_type for n in onnx.load(str(p)).graph.node}
    g = load_model(p)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run_float_output(g, x), ref, rtol=0, atol=_tol(ref))
    q = quantize(g, x)
    assert [n.op for n in q.nodes] == ["conv2d_s8", "lut_s8", "conv2d_s8", "lut_s8", "conv2d_s8", "lut_s8"]
    assert "erf(" in q.nodes[1].attrs["function"] or "tanh(" in q.nodes[1].attrs["function"]
