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
