"""Taylor pruning: channel groups (residual adds, depthwise convs, flatten -> dense), physical removal equal to
gating, the Taylor derivatives against finite differences, the oracle, the pruning loop, `edgepack prune`."""

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from clitools import edgepack, one_line_error
from edgepack.compress import prune_taylor as pt
from edgepack.compress.channel_groups import channel_groups, cost_model, graph_cost, remove_channels
from edgepack.compress.torch_graph import TorchGraph, save_model
from edgepack.errors import EdgepackError
from edgepack.frontend import load_model
from edgepack.reference.float_exec import run_float_output

SHAPE = (1, 3, 8, 8)


class ResDW(nn.Module):
    """stem conv -> [depthwise 3x3 -> pointwise] residual block -> strided conv -> avgpool -> flatten ->
    hidden linear -> linear -> softmax: a residual add, a depthwise conv tied to its producer, a flatten with
    span 4 and a hidden dense layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pw = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.down = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.BatchNorm2d(12), nn.ReLU6())
        self.pool = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(12 * 2 * 2, 16)
        self.fc2 = nn.Linear(16, 5)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.pw(self.dw(x)))
        x = self.pool(self.down(x))
        x = torch.relu(self.fc1(torch.flatten(x, 1)))
        return torch.softmax(self.fc2(x), dim=1)


def _randomize_bn(m, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            mod.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            mod.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)
    return m.eval()


@pytest.fixture(scope="module")
def resdw_graph():
    torch.manual_seed(0)
    return pt.as_graph(_randomize_bn(ResDW()), SHAPE)


def _x(n=4, seed=1, dtype=torch.float32):
    return torch.randn((n,) + SHAPE[1:], generator=torch.Generator().manual_seed(seed)).to(dtype)


def test_groups_couple_residual_depthwise_and_flatten(resdw_graph):
    groups = channel_groups(resdw_graph)
    by_first = {gr.producers[0]: gr for gr in groups}
    names = [n.name for n in resdw_graph.nodes if n.op == "conv2d"]
    stem, dw, pw, down = names
    dense = [n.name for n in resdw_graph.nodes if n.op == "dense"]
    res = by_first[stem]
    assert res.producers == [stem, pw] and res.depthwise == [dw] and res.size == 8
    assert len(res.batchnorms) == 3 and len(res.gates) == 3 and res.prunable
    assert (down, 1) in res.consumers
    d = by_first[down]
    assert d.consumers == [(dense[0], 4)] and d.prunable           # flatten of (12, 2, 2): span 4
    assert by_first[dense[0]].prunable and by_first[dense[0]].consumers == [(dense[1], 1)]
    assert not by_first[dense[1]].prunable and "softmax" in by_first[dense[1]].fixed[0]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_removal_equals_gating(resdw_graph, data):
    """Physically removing channels computes exactly what zeroing their gates computes; costs agree."""
    groups = [gr for gr in channel_groups(resdw_graph) if gr.prunable]
    gr = data.draw(st.sampled_from(groups))
    drop = data.draw(st.lists(st.integers(0, gr.size - 1), min_size=1, max_size=gr.size - 1, unique=True))
    net = TorchGraph(resdw_graph).eval()
    gate = torch.ones(gr.size)
    gate[drop] = 0.0
    x = _x()
    net.gates = {t: gate for t in gr.gates}
    with torch.no_grad():
        masked = net(x)
    g2 = remove_channels(resdw_graph, gr, drop)
    with torch.no_grad():
        removed = TorchGraph(g2).eval()(x)
    np.testing.assert_allclose(removed.numpy(), masked.numpy(), atol=2e-6)
    assert graph_cost(g2) == cost_model(resdw_graph, channel_groups(resdw_graph))({gr.id: gr.size - len(drop)})
    nodes = {n.name: n for n in g2.nodes}
    for p in gr.producers + gr.depthwise:
        assert g2.tensors[nodes[p].inputs[1]].shape[0] == gr.size - len(drop)
    for c, span in gr.consumers:
        assert g2.tensors[nodes[c].inputs[1]].shape[1] == (gr.size - len(drop)) * span


def test_pruned_model_saves_and_reimports(resdw_graph, tmp_path):
    gr = [g for g in channel_groups(resdw_graph) if g.prunable][0]
    net = TorchGraph(remove_channels(resdw_graph, gr, [0, 5])).eval()
    x = _x()
    with torch.no_grad():
        want = net(x).numpy()
    for suffix in (".pt2", ".onnx"):
        p = save_model(net, tmp_path / f"p{suffix}")
        g = load_model(p)  # batchnorms folded, as edgepack build reads it
        np.testing.assert_allclose(run_float_output(g, x.numpy()), want, atol=1e-5)


def test_fixed_groups_refuse_removal():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3, groups=4), nn.ReLU())
    g = pt.as_graph(m.eval(), SHAPE)
    groups = channel_groups(g)
    assert not groups[0].prunable and "multiplier" in groups[0].fixed[0]
    assert not groups[1].prunable and "model output" in groups[1].fixed
    with pytest.raises(EdgepackError, match="cannot be pruned"):
        remove_channels(g, groups[0], [1])


def test_gate_derivatives_match_finite_differences(resdw_graph):
    net = TorchGraph(resdw_graph).double().eval()
    groups = [gr for gr in channel_groups(resdw_graph) if gr.prunable]
    x, y = _x(6, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 0])
    _, g1, h = pt.gate_derivatives(net, groups, x, y, order=2)
    gate_t = groups[0].gates[1]
    n = groups[0].size

    def loss_at(z):
        net.gates = {gate_t: z}
        try:
            with torch.no_grad():
                return float(torch.nn.functional.cross_entropy(net(x, logits=True), y))
        finally:
            net.gates = {}

    eps = 1e-4
    for m in (0, 3, n - 1):
        e = torch.zeros(n, dtype=torch.float64)
        e[m] = eps
        one = torch.ones(n, dtype=torch.float64)
        lp, l0, lm = loss_at(one + e), loss_at(one), loss_at(one - e)
        assert g1[gate_t][m].item() == pytest.approx((lp - lm) / (2 * eps), rel=1e-5, abs=1e-9)
        assert h[gate_t][m].item() == pytest.approx((lp - 2 * l0 + lm) / eps ** 2, rel=1e-3, abs=1e-6)
    # the scores are built from them as the paper's formulas
    _, s1 = pt._gate_step(net, groups, x, y, 1)
    _, s2 = pt._gate_step(net, groups, x, y, 2)
    np.testing.assert_allclose(s1[gate_t], g1[gate_t].numpy() ** 2)
    np.testing.assert_allclose(s2[gate_t], (-g1[gate_t].numpy() + 0.5 * h[gate_t].numpy()) ** 2)


def test_true_importance_is_loss_of_the_removed_filter(resdw_graph):
    net = TorchGraph(resdw_graph).eval()
    groups = channel_groups(resdw_graph)
    x, y = _x(16), torch.arange(16) % 5
    truth = pt.true_importance(net, groups, x, y)
    base = pt.evaluate(net, x, y)[0]
    gr = [g for g in groups if g.prunable][1]
    for c in (0, gr.size - 1):
        removed = TorchGraph(remove_channels(resdw_graph, gr, [c])).eval()
        assert truth[gr.id][c] == pytest.approx(pt.evaluate(removed, x, y)[0] - base, abs=1e-5)
    assert set(truth) == {g.id for g in groups if g.prunable}


def test_spearman():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert pt.spearman(a, a ** 3) == pytest.approx(1.0)
    assert pt.spearman(a, -a) == pytest.approx(-1.0)
    assert pt.spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, rel=1e-6)  # ties: average ranks


def _toy_data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + SHAPE[1:]).astype(np.float32)
    proj = rng.standard_normal((int(np.prod(SHAPE[1:])), 5))
    y = (x.reshape(n, -1) @ proj).argmax(1).astype(np.int64)
    return x, y


@pytest.mark.parametrize("criterion", ["taylor", "taylor2", "magnitude"])
def test_prune_reaches_the_target_with_smaller_tensors(resdw_graph, criterion):
    x, y = _toy_data()
    macs0, params0 = graph_cost(resdw_graph)
    r = pt.prune(resdw_graph, x, y, target_macs=0.6, criterion=criterion, step_batches=3, batch=32,
                 finetune_epochs=0.5, progress=False, so_batches=1)
    assert r.macs <= 0.6 * macs0 and r.macs == graph_cost(r.graph)[0] and r.params < params0
    assert r.history and all(h["macs"] < macs0 for h in r.history)
    before = {n.name: resdw_graph.tensors[n.inputs[1]].shape for n in resdw_graph.nodes if n.op == "conv2d"}
    after = {n.name: r.graph.tensors[n.inputs[1]].shape for n in r.graph.nodes if n.op == "conv2d"}
    assert any(np.prod(after[k]) < np.prod(before[k]) for k in before)
    assert sum(r.channels.values()) < sum(r.channels_before.values())


@pytest.mark.parametrize("m", [2, 4])
def test_channel_multiple_keeps_every_pruned_layer_a_multiple(resdw_graph, m):
    """channel_multiple: each pruned group keeps a multiple of m channels (the DSP kernels' channel pairs);
    groups left alone keep their width."""
    x, y = _toy_data()
    macs0, _ = graph_cost(resdw_graph)
    r = pt.prune(resdw_graph, x, y, target_macs=0.6, step_batches=2, batch=32, finetune_epochs=0, progress=False,
                 channel_multiple=m)
    assert r.macs <= 0.6 * macs0
    changed = {k: v for k, v in r.channels.items() if v != r.channels_before[k]}
    assert changed and all(v % m == 0 and v >= m for v in changed.values()), (r.channels_before, r.channels)
    with pytest.raises(EdgepackError, match="channel-multiple"):
        pt.prune(resdw_graph, x, y, target_macs=0.6, channel_multiple=0, progress=False)


def test_prune_says_when_the_target_cannot_be_reached(resdw_graph):
    x, y = _toy_data(64)
    with pytest.raises(EdgepackError, match="cannot reach the target"):
        pt.prune(resdw_graph, x, y, target_macs=0.01, step_batches=1, batch=32, per_step=50,
                 finetune_epochs=0, progress=False)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, resdw_graph):
    d = tmp_path_factory.mktemp("prune_cli")
    save_model(TorchGraph(resdw_graph), d / "m.pt2")
    x, y = _toy_data(320)
    np.savez(d / "train.npz", x=x, y=y)
    np.savez(d / "noy.npz", x=x)
    np.savez(d / "badlabels.npz", x=x, y=y + 7)
    return d


def test_cli_prune_then_build(cli_files, tmp_path):
    d = cli_files
    out = tmp_path / "pruned.pt2"
    r = edgepack("prune", d / "m.pt2", "--data", d / "train.npz", "--target-macs", "0.6", "-o", out,
                 "--step-batches", "3", "--batch", "32", "--finetune-epochs", "0.5")
    assert r.returncode == 0, r.stderr
    assert "MACs" in r.stdout and "[prune taylor] step 1" in r.stderr
    info = json.loads((tmp_path / "pruned.pt2.json").read_text())
    assert info["macs"] <= 0.6 * info["macs_before"] and info["history"]
    assert info["val_acc_before"] is not None and info["validation"].startswith("10%")
    np.save(tmp_path / "calib.npy", _toy_data(32)[0])
    b = edgepack("build", out, "--board", "host", "-o", tmp_path / "fw", "--calib", tmp_path / "calib.npy")
    assert b.returncode == 0, b.stderr
    rep = json.loads((tmp_path / "fw" / "report.json").read_text())
    assert rep["macs"] == info["macs"] and rep["float_parameters"] == info["params"]


def test_cli_prune_errors_leave_output_alone(cli_files, tmp_path):
    d = cli_files
    out = tmp_path / "pruned.pt2"
    out.write_text("keep me")
    one_line_error(edgepack("prune", d / "m.pt2", "--data", d / "train.npz", "--target-macs", "0.5", "-o", out),
                   "pruned.pt2", "not written by edgepack")  # a file edgepack did not write is never replaced
    assert out.read_text() == "keep me"
    out.unlink()
    one_line_error(edgepack("prune", d / "m.pt2", "--data", d / "noy.npz", "--target-macs", "0.5", "-o", out),
                   "noy.npz", "y")
    one_line_error(edgepack("prune", d / "m.pt2", "--data", d / "badlabels.npz", "--target-macs", "0.5", "-o",
                            out), "badlabels.npz", "labels")
    one_line_error(edgepack("prune", d / "m.pt2", "--data", d / "train.npz", "-o", out), "--target-macs")
    one_line_error(edgepack("prune", d / "m.pt2", "--data", d / "train.npz", "--target-macs", "0.01", "-o", out,
                            "--per-step", "100", "--step-batches", "1", "--batch", "32"), "cannot reach")
    one_line_error(edgepack("prune", d / "missing.pt2", "--data", d / "train.npz", "--target-macs", "0.5",
                            "-o", out), "missing.pt2")
    assert not out.exists()
    assert not (tmp_path / "pruned.pt2.json").exists()


def test_prune_resumes_from_its_checkpoint_to_the_same_model(resdw_graph, tmp_path, monkeypatch):
    """A run that dies after its second pruning step (right after the checkpoint is written) and is started
    again with the same checkpoint ends with exactly the model of a run never interrupted."""
    from edgepack.compress import distributed as D

    x, y = _toy_data(256)
    kw = dict(target_macs=0.45, step_batches=3, batch=32, per_step=2, finetune_epochs=0.5, progress=False)
    full = pt.prune(resdw_graph, x, y, **kw)
    assert len(full.history) >= 3
    ck = tmp_path / "prune.ckpt"
    real, calls = D.checkpoint, []

    def dying(path, state):
        real(path, state)
        calls.append(state["step"])
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(D, "checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        pt.prune(resdw_graph, x, y, checkpoint=ck, **kw)
    monkeypatch.setattr(D, "checkpoint", real)
    resumed = pt.prune(resdw_graph, x, y, checkpoint=ck, **kw)
    def steps(r):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in r.history]

    assert calls == [1, 2] and steps(resumed) == steps(full)
    for name, t in full.graph.tensors.items():
        if t.data is not None:
            assert np.array_equal(resumed.graph.tensors[name].data, t.data), name
    with pytest.raises(EdgepackError, match="another pruning run"):
        pt.prune(resdw_graph, x, y, checkpoint=ck, **{**kw, "target_macs": 0.5})
