"""The arena planner: live tensors never overlap, and the arena meets the liveness bound where it can."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from edgepack.codegen.memplan import _align, plan
from edgepack.graph import Graph


def random_dag(sizes, skips):
    """A chain x -> t0 -> t1 ... where node i may also read an earlier tensor (residual adds)."""
    g = Graph()
    g.add_tensor("x", (1, sizes[0]), "int8")
    names = ["x"]
    for i, s in enumerate(sizes[1:]):
        out = f"t{i}"
        g.add_tensor(out, (1, s), "int8")
        ins = [names[-1]]
        j = skips[i % len(skips)]
        if j and len(names) > j:
            ins.append(names[-1 - j])
        g.add_node("add_s8" if len(ins) > 1 else "clamp_s8", f"n{i}", ins, [out])
        names.append(out)
    g.inputs, g.outputs = ["x"], [names[-1]]
    return g


def assert_live_buffers_apart(p):
    bufs = list(p.buffers.values())
    for a in bufs:
        assert a.offset >= 0 and a.offset + a.size <= p.arena_bytes
        for b in bufs:
            if a is b or a.last < b.first or b.last < a.first:
                continue
            assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=3, max_size=14), st.lists(st.integers(0, 4), min_size=1))
def test_live_buffers_never_overlap(sizes, skips):
    g = random_dag(sizes, skips)
    p = plan(g)
    assert_live_buffers_apart(p)
    assert p.arena_bytes >= p.bound_bytes
    assert p.total_bytes >= p.arena_bytes


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=3, max_size=14))
def test_chain_meets_the_bound(sizes):
    p = plan(random_dag(sizes, [0]))
    assert p.arena_bytes == p.bound_bytes


def test_input_and_output_are_caller_buffers_and_reshape_aliases():
    g = Graph()
    for n, s in [("x", 100), ("a", 64), ("b", 64), ("y", 10)]:
        g.add_tensor(n, (1, s), "int8")
    g.add_node("clamp_s8", "c", ["x"], ["a"])
    g.add_node("reshape", "r", ["a"], ["b"], shape=(1, 64))
    g.add_node("clamp_s8", "d", ["b"], ["y"])
    g.inputs, g.outputs = ["x"], ["y"]
    p = plan(g)
    assert p.storage["x"][0] == "input" and p.storage["y"][0] == "output"
    assert p.storage["a"] == p.storage["b"] == ("arena", 0)
    assert p.arena_bytes == _align(64)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=3, max_size=12), st.lists(st.integers(0, 4), min_size=1),
       st.lists(st.integers(0, 3000), min_size=1))
def test_scratch_is_planned_in_the_arena_apart_from_live_tensors(sizes, skips, scratch_sizes):
    """A kernel's scratch (the SMLAD im2col columns) lives at its node only: it never overlaps a tensor live
    there, and the bound with scratch is at most the tensors' bound plus the largest scratch."""
    g = random_dag(sizes, skips)
    scratch = {n.name: scratch_sizes[i % len(scratch_sizes)] for i, n in enumerate(g.nodes)}
    p = plan(g, scratch=scratch)
    assert_live_buffers_apart(p)
    assert set(p.scratch) == {k for k, v in scratch.items() if v}
    assert p.tensor_bound_bytes <= p.bound_bytes <= p.tensor_bound_bytes + _align(max(scratch.values()))
    assert p.arena_bytes >= p.bound_bytes and p.scratch_bytes == max(scratch.values())
    assert plan(g).bound_bytes == p.tensor_bound_bytes


# ---- views: concat inputs written in place, slices as views ---------------------------------------------------
import opgen  # noqa: E402
from edgepack.graph import QParams  # noqa: E402

Q = QParams(0.05, -3)


def _conv(g, name, x, cout, q=Q, k=1, dw=False):
    """name = a 1x1 (or kxk) conv2d_s8 / dwconv2d_s8 of x in quantization q."""
    rng = np.random.default_rng(len(g.tensors))
    _, h, w, c = g.tensors[x].shape
    g.add_tensor(name, (1, h, w, cout), "int8", quant=q)
    wshape = (k, k, cout) if dw else (cout, k, k, c)
    g.add_const(name + "_w", rng.integers(-127, 128, wshape).astype(np.int8))
    g.add_const(name + "_b", rng.integers(-500, 500, cout).astype(np.int32))
    g.add_const(name + "_m", np.full(cout, 1 << 29, np.int32))
    g.add_const(name + "_s", np.full(cout, -6, np.int32))
    p = (k - 1) // 2
    g.add_node("dwconv2d_s8" if dw else "conv2d_s8", name, [x] + [name + s for s in ("_w", "_b", "_m", "_s")],
               [name], strides=(1, 1), pads=(p, p, p, p), dilations=(1, 1), in_zp=g.tensors[x].quant.zero_point,
               out_zp=q.zero_point, act_min=-128, act_max=127, depth_multiplier=1)


def _clamp(g, name, x, shape=None):
    g.add_tensor(name, shape or g.tensors[x].shape, "int8", quant=g.tensors[x].quant)
    g.add_node("clamp_s8", name, [x], [name], lo=-100, hi=100)


def _cat(g, name, ins, axis, q=Q):
    opgen._concat_node(g, name, ins, name, axis, q)


def _graph(x_shape=(1, 5, 6, 8)):
    g = Graph()
    g.add_tensor("x", x_shape, "int8", quant=Q)
    g.inputs = ["x"]
    return g


def _run_equal(g, tmp_path):
    from edgepack.boards import get_board
    from edgepack.build import emit
    from edgepack.runners import Model, host, reference

    emit(g, get_board("host"), tmp_path, "pytest tests/test_memplan.py")
    m = Model(tmp_path)
    x = np.random.default_rng(0).integers(-128, 128, (3,) + tuple(g.tensors["x"].shape[1:])).astype(np.int8)
    assert np.array_equal(host.run_raw(m, x), reference.run_raw(m, x))


def test_fire_module_concat_runs_no_code(tmp_path):
    """SqueezeNet's fire module: expand1x1 and expand3x3 write straight into their channels of the concat."""
    g = _graph()
    _conv(g, "sq", "x", 3)
    _conv(g, "e1", "sq", 4)
    _conv(g, "e3", "sq", 5, k=3)
    _cat(g, "cat", ["e1", "e3"], 3)
    _conv(g, "y", "cat", 2)
    g.outputs = ["y"]
    p = plan(g)
    assert "cat" in p.elided and p.in_place["cat"] == [0, 1]
    assert p.layouts["e1"] == (6 * 9, 9) and p.layouts["e3"] == (6 * 9, 9)
    assert p.storage["e3"][1] == p.storage["cat"][1] + 4
    assert p.arena_bytes == p.bound_bytes
    # the bound counts the concat's storage once: sq + cat, where copying would hold e1 + e3 + cat at the concat
    assert p.bound_bytes == _align(5 * 6 * 3) + _align(5 * 6 * 9)
    assert p.bound_without_views == _align(5 * 6 * 4) + _align(5 * 6 * 5) + _align(5 * 6 * 9)
    _run_equal(g, tmp_path)


def test_ghost_module_strided_reader(tmp_path):
    """GhostNet: x1 = conv(x) is concatenated and also read by the cheap depthwise conv: both write their
    channels in place, the depthwise conv reading x1 as a strided view."""
    g = _graph()
    _conv(g, "x1", "x", 4)
    _conv(g, "x2", "x1", 4, k=3, dw=True)
    _cat(g, "cat", ["x1", "x2"], 3)
    _conv(g, "y", "cat", 3)
    g.outputs = ["y"]
    p = plan(g)
    assert "cat" in p.elided and p.layouts["x1"] == (6 * 8, 8)
    assert p.arena_bytes == p.bound_bytes
    _run_equal(g, tmp_path)


def test_copies_say_why(tmp_path):
    g = _graph()
    _clamp(g, "c", "x")
    _conv(g, "r", "x", 2, q=QParams(0.07, 5))
    _conv(g, "ok", "x", 3)
    _cat(g, "cat", ["x", "c", "r", "ok"], 3)
    _conv(g, "y", "cat", 2)
    g.outputs = ["y"]
    p = plan(g)
    note = p.notes["cat"]
    assert p.in_place["cat"] == [3] and "cat" not in p.elided
    assert "input 0 'x' copied: it is the model input" in note
    assert "input 1 'c' copied: its producer 'c' (clamp_s8) cannot write a strided view" in note
    assert "input 2 'r' copied: it is requantized" in note
    _run_equal(g, tmp_path)


def test_concat_along_h_is_dense_for_any_producer(tmp_path):
    g = _graph()
    _clamp(g, "a", "x")
    _conv(g, "b", "x", 8)
    _cat(g, "cat", ["a", "b"], 1)
    _clamp(g, "y", "cat")
    g.outputs = ["y"]
    p = plan(g)
    assert "cat" in p.elided and not p.layouts
    assert p.storage["b"][1] == p.storage["cat"][1] + 5 * 6 * 8
    _run_equal(g, tmp_path)


def test_concat_into_the_model_output(tmp_path):
    g = _graph()
    _conv(g, "a", "x", 2)
    _conv(g, "b", "x", 3)
    _cat(g, "cat", ["a", "b"], 3)
    g.outputs = ["cat"]
    p = plan(g)
    assert p.storage["a"] == ("output", 0) and p.storage["b"] == ("output", 2) and p.arena_bytes == 0
    _run_equal(g, tmp_path)


def test_slices_are_views_where_their_readers_allow(tmp_path):
    g = _graph()
    for name, axis, start, end, reader in (("s1", 3, 2, 7, "conv"), ("s2", 3, 0, 4, "clamp"), ("s3", 1, 1, 4,
                                                                                             "clamp")):
        shape = list(g.tensors["x"].shape)
        shape[axis] = end - start
        g.add_tensor(name, tuple(shape), "int8", quant=Q)
        g.add_node("slice_s8", name, ["x"], [name], axis=axis, start=start, end=end, step=1, identity=True)
        if reader == "conv":
            _conv(g, name + "_r", name, 5)
        else:
            _clamp(g, name + "_r", name)
    _conv(g, "u", "s2_r", 5)
    _conv(g, "v", "s3_r", 10)
    _cat(g, "y", ["s1_r", "u"], 3)
    _cat(g, "y2", ["y", "v"], 1)
    g.outputs = ["y2"]
    p = plan(g)
    assert "s1" in p.elided and p.layouts["s1"] == (6 * 8, 8) and p.storage["s1"] == ("input", 2)
    assert "s2" not in p.elided and "clamp_s8" in p.notes["s2"]
    assert "s3" in p.elided and p.storage["s3"] == ("input", 6 * 8) and "dense view" in p.notes["s3"]
    _run_equal(g, tmp_path)
