"""Taylor pruning: structured filter pruning by the Taylor estimate of each filter's contribution to the loss.

Paper: P. Molchanov, A. Mallya, S. Tyree, I. Frosio, J. Kautz, "Importance Estimation for Neural Network
Pruning", CVPR 2019 (official code: github.com/NVlabs/Taylor_pruning).

Gates. A gate z (a vector of ones, one entry per channel) multiplies the output of every batchnorm that follows
a conv / dense layer (the paper's "gate after BN"; a layer without a batchnorm is gated at its own output).
Setting z_m = 0 removes filter m. With L the mean cross-entropy of a minibatch and g_m = dL/dz_m:

* first order (``criterion="taylor"``, the paper's Taylor FO on gates):
      I1_m = (g_m * z_m)^2 = g_m^2
* second order (``criterion="taylor2"``, the paper's Taylor SO; the loss change of removing filter m to second
  order is -g_m z_m + 1/2 z_m H_mm z_m):
      I2_m = (-g_m * z_m + 1/2 * z_m^2 * H_mm)^2 = (-g_m + 1/2 H_mm)^2,   H_mm = d^2 L / d z_m^2
  H_mm is computed exactly (double back-propagation, one pass per gate entry), as the official code does, on
  the first ``so_batches`` minibatches of each step (it costs one backward pass per channel).

Both are computed per minibatch and averaged over the minibatches since the last pruning step (the official
``add_criteria`` / ``compute_saliency``). Coupled channels (:mod:`edgepack.compress.channel_groups`: residual
adds, depthwise convs tied to their producer) form one group; a group's score for channel c is the *mean* of the
scores of its gates at c (the official code divides the accumulated score of skip-connected gates by their
number). Scores are ranked globally over all layers without per-layer normalisation, as the paper does (the
scores estimate the same quantity, a loss change, in every layer); ``normalize="l2"`` divides each group's
scores by their L2 norm (Molchanov et al., ICLR 2017) for comparison.

Baseline (``criterion="magnitude"``): the squared L2 norm of the filter's weights (conv / dense rows of the
group's producers, mean over producers), the paper's "weight magnitude" criterion.

Iterative pruning (:func:`prune`): fine-tune for ``step_batches`` minibatches while accumulating the scores,
remove the ``per_step`` lowest-scoring channels globally (never a group's last ``min_channels``; with
``channel_multiple`` m > 1, in units of a group's m lowest-scoring remaining channels, ranked by their mean
score, so that every pruned group keeps a multiple of m channels -- the DSP kernels of codegen/schedules.py
process channels in pairs and im2col columns in int16 pairs, and their remainder paths cost several times the
instructions per MAC, so a layer pruned to an odd width can run slower than the unpruned one), physically
shrink the graph (:func:`~edgepack.compress.channel_groups.remove_channels`: new, smaller tensors), repeat until
the MACs (and / or parameters) fall to the target fraction, then fine-tune ``finetune_epochs`` epochs.

Data-parallel (``torchrun --nproc_per_node N``, :mod:`edgepack.compress.distributed`): :func:`prune` and
:func:`finetune` train through DistributedDataParallel, ``batch`` is per rank (global batch = batch x N; every
global batch is the one-process batch of N x batch examples, each rank taking every N-th of them), the Taylor
scores accumulated on every rank are averaged over the ranks (all-reduce) before ranking, and the removal
decision is checked to be the same on every rank, so every rank removes the same filters and ends with the same
pruned model; batchnorm running statistics are averaged over the ranks before each graph rebuild. Only rank 0
prints.

True importance (:func:`true_importance`, the paper's oracle): the increase of the held-out loss when a channel
alone is removed (its gates set to zero), which :func:`spearman` compares with the estimates.

Works on any model edgepack imports: a ``.pt2`` / ``.pt`` / ``.onnx`` file alone (no Python class needed), an
``nn.Module`` (exported with torch.export), or a float-dialect graph; the model runs as a
:class:`~edgepack.compress.torch_graph.TorchGraph` and is written back with
:func:`~edgepack.compress.torch_graph.save_model`. The loss is cross-entropy on the model's logits (a final
softmax is skipped), so the model must be a classifier with integer labels.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EdgepackError, load_labelled_npz
from ..graph import Graph
from . import distributed as D
from .channel_groups import channel_groups, cost_model, graph_cost, remove_channels
from .torch_graph import TorchGraph

__all__ = ["CRITERIA", "PruneResult", "as_graph", "evaluate", "finetune", "gate_derivatives",
           "magnitude_importance", "prune", "prune_file", "spearman", "taylor_importance",
           "true_importance"]

CRITERIA = ("taylor", "taylor2", "magnitude")


# ---- inputs ---------------------------------------------------------------------------------------------
def as_graph(model, input_shape=None, trust_pickle: bool = False) -> Graph:
    """A float-dialect graph with batchnorms kept, from a model file path, an nn.Module (needs
    ``input_shape``), a TorchGraph or a Graph (copied). ``trust_pickle``: see :func:`edgepack.frontend.load_model`."""
    if isinstance(model, TorchGraph):
        return model.to_graph()
    if isinstance(model, Graph):
        return copy.deepcopy(model)
    if isinstance(model, nn.Module):
        if input_shape is None:
            raise EdgepackError("pruning an nn.Module needs input_shape (e.g. (1, 1, 28, 28))")
        from ..frontend import finish_graph  # noqa: F401  (import order: frontend package first)
        from ..frontend.torch_frontend import _Walker, _quiet
        shape = (1,) + tuple(int(v) for v in input_shape)[1:]
        with _quiet(), torch.no_grad():
            ep = torch.export.export(copy.deepcopy(model).eval(), (torch.zeros(shape),))
        return _Walker(ep, type(model).__name__, shape).run(fold_bn=False)
    from ..frontend import load_model
    return load_model(model, input_shape, fold_bn=False, trust_pickle=trust_pickle)


def _tensors(x, y=None):
    xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if y is None:
        return xt
    yt = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(y).astype(np.int64))
    if len(xt) != len(yt):
        raise EdgepackError(f"--data: {len(xt)} inputs but {len(yt)} labels")
    return xt, yt


def _batches(n, batch, gen):
    """Minibatches of a fresh permutation; on N ranks (same generator state on all) each global batch holds
    N x batch examples of which this rank takes every N-th (DistributedSampler's split)."""
    perm = torch.randperm(n, generator=gen)
    ws = D.world_size()
    if ws > 1:
        rank, gb = torch.distributed.get_rank(), batch * ws
        for i in range(0, n - gb + 1 if n >= gb else 1, gb):
            yield perm[i:i + gb][rank::ws]
        return
    for i in range(0, n - batch + 1 if n >= batch else 1, batch):
        yield perm[i:i + batch]


def _loss(net, x, y):
    return F.cross_entropy(net(x, logits=True), y)


@torch.no_grad()
def evaluate(net: TorchGraph, x, y, batch: int = 500) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``net`` in eval mode on (x, y)."""
    xt, yt = _tensors(x, y)
    was = net.training
    net.eval()
    loss = correct = 0.0
    for i in range(0, len(xt), batch):
        out = net(xt[i:i + batch], logits=True)
        loss += float(F.cross_entropy(out, yt[i:i + batch], reduction="sum"))
        correct += int((out.argmax(1) == yt[i:i + batch]).sum())
    net.train(was)
    return loss / len(xt), correct / len(xt)


# ---- scores ---------------------------------------------------------------------------------------------
def _gate_sizes(groups):
    sizes = {}
    for gr in groups:
        for t in gr.gates:
            sizes[t] = gr.size
    return sizes


class _Scores:
    """Accumulates per-gate scores over minibatches (sum and count), then reduces per group."""

    def __init__(self, groups):
        self.groups = groups
        self.sum = {t: np.zeros(n) for t, n in _gate_sizes(groups).items()}
        self.count = 0

    def add(self, per_gate: dict):
        for t, v in per_gate.items():
            self.sum[t] += v
        self.count += 1

    def all_reduce(self) -> None:
        """Mean over the ranks (no-op in one process): every rank then ranks the same scores."""
        if D.world_size() > 1:
            keys = list(self.sum)
            red = D.all_reduce_mean([self.sum[t] for t in keys] + [float(self.count)])
            self.sum = dict(zip(keys, red[:-1]))
            self.sum = D.broadcast_object(self.sum)  # rank 0's copy, bit for bit, on every rank
            self.count = red[-1]

    def by_group(self, normalize: str = "none") -> dict:
        out = {}
        for gr in self.groups:
            s = np.mean([self.sum[t] for t in gr.gates], axis=0) / max(self.count, 1)
            if normalize == "l2":
                s = s / (np.linalg.norm(s) + 1e-12)
            out[gr.id] = s
        return out


def gate_derivatives(net: TorchGraph, groups, x, y, order: int = 1):
    """At unit gates z = 1 on every gate of ``groups``: (loss, {gate: dL/dz}, {gate: diag d2L/dz2} or None for
    order 1). L is the minibatch's mean cross-entropy; the loss keeps its autograd graph (the caller may
    back-propagate it into the weights). The Hessian diagonal is exact: one double-backward pass per entry."""
    gates = {t: torch.ones(n, dtype=x.dtype, requires_grad=True) for t, n in _gate_sizes(groups).items()}
    inner = D.unwrap(net)  # a DDP wrapper runs the forward; the gates live on the TorchGraph inside
    inner.gates = gates
    try:
        loss = _loss(net, x, y)
        names = list(gates)
        grads = torch.autograd.grad(loss, [gates[t] for t in names], create_graph=(order == 2),
                                    retain_graph=True)
        first = {t: gr.detach().double() for t, gr in zip(names, grads)}
        second = None
        if order == 2:
            second = {}
            for t, gr in zip(names, grads):
                h = torch.empty(len(gr), dtype=torch.float64)
                for m in range(len(gr)):
                    h[m] = torch.autograd.grad(gr[m], gates[t], retain_graph=True)[0][m].double()
                second[t] = h
    finally:
        inner.gates = {}
    return loss, first, second


def _gate_step(net, groups, x, y, order: int):
    """One minibatch: (loss with its graph, per-gate scores I1 = g^2 or I2 = (-g + H/2)^2 as numpy arrays)."""
    loss, g, h = gate_derivatives(net, groups, x, y, order)
    if order == 1:
        return loss, {t: (v ** 2).numpy() for t, v in g.items()}
    return loss, {t: ((-v + 0.5 * h[t]) ** 2).numpy() for t, v in g.items()}


def taylor_importance(net: TorchGraph, groups, x, y, order: int = 1, batch: int = 64, batches: int | None = None,
                      seed: int = 0, train_mode: bool = False, normalize: str = "none") -> dict:
    """Taylor scores per group (dict group id -> array over its channels), averaged over minibatches of (x, y):
    ``order`` 1 (FO) or 2 (SO); see the module docstring. ``batches`` limits the number of minibatches; BN in
    eval mode unless ``train_mode``. The model's weights are not changed."""
    if order not in (1, 2):
        raise ValueError("order must be 1 or 2")
    xt, yt = _tensors(x, y)
    was = net.training
    net.train(train_mode)
    if train_mode:  # do not let scoring move the running statistics
        saved = {k: v.clone() for k, v in net.named_buffers()}
    acc = _Scores(groups)
    gen = torch.Generator().manual_seed(seed)
    for k, idx in enumerate(_batches(len(xt), batch, gen)):
        if batches is not None and k >= batches:
            break
        _, s = _gate_step(net, groups, xt[idx], yt[idx], order)
        acc.add(s)
    if train_mode:
        with torch.no_grad():
            for k, v in net.named_buffers():
                v.copy_(saved[k])
    net.train(was)
    return acc.by_group(normalize)


def magnitude_importance(net: TorchGraph, groups, normalize: str = "none") -> dict:
    """Squared L2 norm of each filter's weights (mean over the group's producers): the weight-magnitude
    baseline."""
    g = net.graph
    nodes = {n.name: n for n in g.nodes}
    out = {}
    for gr in groups:
        per = []
        for p in gr.producers:
            w = net.value(nodes[p].inputs[1]).detach().double().numpy()
            per.append((w.reshape(w.shape[0], -1) ** 2).sum(axis=1))
        s = np.mean(per, axis=0)
        if normalize == "l2":
            s = s / (np.linalg.norm(s) + 1e-12)
        out[gr.id] = s
    return out


@torch.no_grad()
def true_importance(net: TorchGraph, groups, x, y, batch: int = 500, progress: bool = False) -> dict:
    """The oracle: for every channel of every prunable group, the increase of the mean cross-entropy on (x, y)
    (eval mode) when that channel alone is removed (all its gates zero). Dict group id -> array."""
    base, _ = evaluate(net, x, y, batch)
    out = {}
    total = sum(gr.size for gr in groups if gr.prunable)
    done = 0
    for gr in groups:
        if not gr.prunable:
            continue
        d = np.zeros(gr.size)
        for c in range(gr.size):
            gate = torch.ones(gr.size)
            gate[c] = 0.0
            net.gates = {t: gate for t in gr.gates}
            try:
                d[c] = evaluate(net, x, y, batch)[0] - base
            finally:
                net.gates = {}
            done += 1
        if progress:
            print(f"[oracle] {done}/{total} channels", file=sys.stderr, flush=True)
        out[gr.id] = d
    return out


def spearman(a, b) -> float:
    """Spearman rank correlation (ties get their average rank)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()

    def rank(v):
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for val in np.unique(v):  # average ranks of ties
            m = v == val
            if m.sum() > 1:
                r[m] = r[m].mean()
        return r

    ra, rb = rank(a), rank(b)
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


# ---- training ---------------------------------------------------------------------------------------------
def finetune(net: TorchGraph, x, y, epochs: float = 1.0, batch: int = 64, lr: float = 1e-3, seed: int = 0,
             progress: bool = True, tag: str = "finetune") -> TorchGraph:
    """Fine-tune ``net`` with Adam and a cosine learning rate over ``epochs`` (fractions allowed); eval mode
    afterwards."""
    xt, yt = _tensors(x, y)
    per_epoch = max(1, len(xt) // (batch * D.world_size()))
    steps = int(round(epochs * per_epoch))
    if steps <= 0:
        return net.eval()
    progress = progress and D.is_main()
    model, net = net, D.wrap(net)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    step, total, t0 = 0, 0.0, time.time()
    while step < steps:
        for idx in _batches(len(xt), batch, gen):
            opt.zero_grad()
            loss = _loss(net, xt[idx], yt[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            step += 1
            if progress and (step % per_epoch == 0 or step == steps):
                print(f"[{tag}] {step}/{steps} minibatches, loss {total / step:.4f}, {time.time() - t0:.1f} s",
                      file=sys.stderr, flush=True)
            if step >= steps:
                break
    D.sync_buffers(model)
    return model.eval()


@dataclass
class PruneResult:
    """What :func:`prune` returns: the pruned graph (batchnorms kept) and its TorchGraph, the cost before and
    after, and one history entry per pruning step."""

    graph: Graph
    net: TorchGraph
    macs_before: int
    params_before: int
    macs: int
    params: int
    criterion: str
    history: list = field(default_factory=list)
    channels_before: dict = field(default_factory=dict)
    channels: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"criterion": self.criterion, "macs_before": self.macs_before, "macs": self.macs,
                "macs_fraction": self.macs / self.macs_before, "params_before": self.params_before,
                "params": self.params, "params_fraction": self.params / self.params_before,
                "channels_before": self.channels_before, "channels": self.channels, "steps": len(self.history)}


def _channels(g) -> dict:
    return {", ".join(gr.producers + gr.depthwise): gr.size for gr in channel_groups(g) if not gr.fixed}


def prune(model, x, y, target_macs: float | None = None, target_params: float | None = None,
          criterion: str = "taylor", per_step: int | None = None, step_batches: int = 20, batch: int = 64,
          lr: float = 1e-3, finetune_epochs: float = 1.0, x_val=None, y_val=None, min_channels: int = 1,
          channel_multiple: int = 1,
          so_batches: int = 4, normalize: str = "none", seed: int = 0, progress: bool = True,
          input_shape=None, reference_cost: tuple | None = None, checkpoint=None) -> PruneResult:
    """Iterative pruning of ``model`` (path, nn.Module, TorchGraph or Graph) on training data (x, y) until its
    MACs are at most ``target_macs`` times the original (and / or its parameters at most ``target_params``
    times), then ``finetune_epochs`` of fine-tuning. ``reference_cost`` = (macs, params) the fractions refer to
    (default: the model's own). See the module docstring; progress goes to stderr.

    ``checkpoint``: a file written (atomically, by rank 0) after every pruning step with the pruned graph, the
    step, the history and the RNG states; a run started with an existing checkpoint of the same settings and
    world size resumes after its last step and ends with the same model as a run never interrupted (each step
    starts a fresh optimizer, so the step boundary holds the whole state; the final fine-tuning is redone)."""
    if criterion not in CRITERIA:
        raise EdgepackError(f"--criterion {criterion}: unknown pruning criterion; choose one of {', '.join(CRITERIA)}")
    check_targets(target_macs, target_params)
    if int(channel_multiple) < 1:
        raise EdgepackError(f"--channel-multiple {channel_multiple}: must be a positive number of channels")
    m = int(channel_multiple)
    min_channels = max(min_channels, m) if m > 1 else min_channels
    xt, yt = _tensors(x, y)
    if len(xt) < batch:
        raise EdgepackError(f"--data: {len(xt)} examples, fewer than one minibatch (--batch {batch})")
    torch.manual_seed(seed)
    g = as_graph(model, input_shape)
    want = tuple(g.tensors[g.inputs[0]].shape[1:])
    if tuple(xt.shape[1:]) != want:
        raise EdgepackError(f"--data: inputs of shape {tuple(xt.shape[1:])} do not match the model input "
                            f"(N, {', '.join(map(str, want))})")
    net = TorchGraph(g)
    macs0, params0 = graph_cost(g)
    ref_macs, ref_params = reference_cost or (macs0, params0)
    goal_macs = None if target_macs is None else target_macs * ref_macs
    goal_params = None if target_params is None else target_params * ref_params
    res = PruneResult(g, net, macs0, params0, macs0, params0, criterion, [], _channels(g), {})

    def reached(macs, params):
        return (goal_macs is None or macs <= goal_macs) and (goal_params is None or params <= goal_params)

    def goal_text():
        return " and ".join(f"{int(v)} {k}" for k, v in (("MACs", goal_macs), ("parameters", goal_params))
                            if v is not None)

    groups0 = channel_groups(g)
    floor = cost_model(g, groups0)({gr.id: min(gr.size, min_channels) for gr in groups0 if gr.prunable})
    if not reached(*floor):
        raise EdgepackError(f"cannot reach the target ({goal_text()}): with every prunable layer down to "
                            f"{min_channels} channel(s) the model still has {floor[0]} MACs and {floor[1]} "
                            f"parameters (now {macs0} / {params0}); layers that cannot be pruned: "
                            + (", ".join(sorted({p for gr in groups0 if not gr.prunable for p in gr.producers}))
                               or "none"))

    gen = torch.Generator().manual_seed(seed)
    step = 0
    t0 = time.time()
    progress = progress and D.is_main()
    settings = {"model_fingerprint": g.fingerprint(), "data": len(xt), "target_macs": target_macs,
                "target_params": target_params, "criterion": criterion, "per_step": per_step,
                "step_batches": step_batches, "batch": batch, "lr": lr, "min_channels": min_channels, "channel_multiple": m,
                "so_batches": so_batches, "normalize": normalize, "seed": seed, "reference_cost": [ref_macs, ref_params]}
    if checkpoint is not None:
        st = D.resume(checkpoint)
        if st is not None:
            if st.get("settings") != settings:
                diff = sorted(k for k in settings if st.get("settings", {}).get(k) != settings[k])
                raise EdgepackError(f"{checkpoint}: a checkpoint of another pruning run (differs in "
                                    f"{', '.join(diff)}); remove it or give another --checkpoint")
            g, step, res.history = st["graph"], st["step"], st["history"]
            gen.set_state(st["gen"])
            D._set_rng_state(st["rng"][D.dist_env().rank])
            net = TorchGraph(g)
            res.macs, res.params = graph_cost(g)
            if progress:
                print(f"[prune {criterion}] resumed from {checkpoint} after step {step}: MACs {res.macs}, "
                      f"params {res.params}", file=sys.stderr, flush=True)
    if x_val is not None and progress:
        vl, va = evaluate(net, x_val, y_val)
        print(f"[prune {criterion}] start: MACs {macs0}, params {params0}, val loss {vl:.4f}, val acc {va:.4f}",
              file=sys.stderr, flush=True)
    while not reached(res.macs, res.params):
        groups = channel_groups(g)
        cands = [gr for gr in groups if gr.prunable and gr.size > min_channels]
        if not cands:
            raise EdgepackError(f"cannot reach the target ({goal_text()}): every prunable layer is down to "
                                f"{min_channels} channel(s) at {res.macs} MACs / {res.params} parameters")
        n_prunable = sum(gr.size for gr in cands)
        k = per_step or max(1, int(round(0.03 * n_prunable)))
        # fine-tune step_batches minibatches, accumulating the Taylor scores from the same backward passes
        ddp = D.wrap(net)  # DDP on several ranks, the net itself in one process
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        acc = _Scores(groups)
        net.train()
        losses = []
        order = 2 if criterion == "taylor2" else 1
        done = 0
        while done < step_batches:
            for idx in _batches(len(xt), batch, gen):
                opt.zero_grad()
                if criterion == "magnitude":
                    loss = _loss(ddp, xt[idx], yt[idx])
                else:
                    use_order = order if (order == 1 or done < so_batches) else None
                    if use_order is None:
                        loss = _loss(ddp, xt[idx], yt[idx])
                    else:
                        loss, s = _gate_step(ddp, groups, xt[idx], yt[idx], use_order)
                        acc.add(s)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                done += 1
                if done >= step_batches:
                    break
        net.eval()
        D.sync_buffers(net)
        acc.all_reduce()
        scores = magnitude_importance(net, groups, normalize) if criterion == "magnitude" \
            else acc.by_group(normalize)
        ranked = sorted(_units(scores, cands, m))
        counts = {gr.id: gr.size for gr in groups}
        cost = cost_model(g, groups)
        drop: dict[int, list] = {}
        for _, gid, _, unit in ranked:
            if counts[gid] - len(unit) < min_channels:
                continue
            drop.setdefault(gid, []).extend(unit)
            counts[gid] -= len(unit)
            if sum(len(v) for v in drop.values()) >= k or reached(*cost(counts)):
                break
        D.check_same(sorted((gid, sorted(v)) for gid, v in drop.items()), "the channels to remove")
        cur = net.to_graph()
        byid = {gr.id: gr for gr in groups}
        for gid, chans in drop.items():  # groups are disjoint: each removal leaves the others' indices valid
            cur = remove_channels(cur, byid[gid], chans)
        g = cur
        net = TorchGraph(g)
        res.macs, res.params = graph_cost(g)
        step += 1
        entry = {"step": step, "removed": {", ".join(byid[i].producers): len(v) for i, v in drop.items()},
                 "macs": res.macs, "params": res.params, "macs_fraction": res.macs / ref_macs,
                 "train_loss": float(D.all_reduce_mean(float(np.mean(losses)))), "seconds": round(time.time() - t0, 1)}
        if x_val is not None:
            entry["val_loss"], entry["val_acc"] = evaluate(net, x_val, y_val)
        res.history.append(entry)
        if checkpoint is not None:
            D.checkpoint(checkpoint, {"graph": g, "step": step, "history": res.history, "gen": gen.get_state(),
                                      "settings": settings})
        if progress:
            tail = f", val acc {entry['val_acc']:.4f}" if "val_acc" in entry else ""
            print(f"[prune {criterion}] step {step}: removed {sum(len(v) for v in drop.values())} channels, "
                  f"MACs {res.macs} ({100 * res.macs / ref_macs:.1f} %), params {res.params} "
                  f"({100 * res.params / ref_params:.1f} %), train loss {entry['train_loss']:.4f}{tail}, "
                  f"{entry['seconds']} s", file=sys.stderr, flush=True)
    if finetune_epochs:
        finetune(net, xt, yt, finetune_epochs, batch, lr, seed, progress, tag=f"prune {criterion}: fine-tune")
    res.graph, res.net = net.to_graph(), net.eval()
    res.channels = _channels(res.graph)
    return res


def _units(scores, groups, m):
    """(mean score, group id, unit index, channels) of the removal units: single channels for m = 1; else each
    group's channels in ascending score, the first unit taking size % m of them (or m) so that what remains is a
    multiple of m, then m at a time. Units of a group rank in their order (their means do not decrease)."""
    out = []
    for gr in groups:
        sc = [float(scores[gr.id][c]) for c in range(gr.size)]
        if m == 1:
            out += [(sc[c], gr.id, c, [c]) for c in range(gr.size)]
            continue
        order = sorted(range(gr.size), key=lambda c: sc[c])
        first = gr.size % m or m
        cut = [order[:first]] + [order[i:i + m] for i in range(first, gr.size, m)]
        out += [(float(np.mean([sc[c] for c in u])), gr.id, j, u) for j, u in enumerate(cut)]
    return out


# ---- files in, file out (the `edgepack prune` command) ------------------------------------------------------
def check_targets(target_macs, target_params):
    if target_macs is None and target_params is None:
        raise EdgepackError("give a target: --target-macs and / or --target-params (fractions of the original, "
                            "e.g. 0.6)")
    for name, v in (("--target-macs", target_macs), ("--target-params", target_params)):
        if v is not None and not 0.0 < v <= 1.0:
            raise EdgepackError(f"{name} {v}: must be a fraction in (0, 1] of the original, e.g. 0.6")


def check_output_file(output: Path, model=None):
    """Refuse an output model path that pruning must not write: the input model itself, a folder, a path under
    a file, or an existing file that no earlier ``edgepack prune`` wrote (its sidecar ``<output>.json`` records
    the SHA-256 of the file edgepack wrote; a changed or foreign file is left alone)."""
    import json
    import os
    from pathlib import Path

    from .. import provenance
    from ..outdir import check_parent_writable, sha256

    output = Path(output)
    if not isinstance(model, (Graph, nn.Module, TorchGraph)) and model is not None and Path(model).exists() \
            and output.exists() and os.path.samefile(model, output):
        raise EdgepackError(f"-o {output}: is the input model; write the pruned model to another file")
    if output.is_dir():
        raise EdgepackError(f"-o {output}: is a folder; give a file name ending in .pt2 or .onnx")
    check_parent_writable(output, str(output))
    side = provenance.sidecar(output)
    for f in (output, side):
        if not f.exists():
            continue
        try:
            doc = json.loads(side.read_text())
            ours = isinstance(doc, dict) and provenance.KEY in doc
            written = doc.get("output_sha256") if ours else None
        except (OSError, ValueError):
            ours, written = False, None
        if f == side and not ours:
            raise EdgepackError(f"-o {output}: {side} exists and was not written by edgepack; pruning writes that "
                                "file beside the model: move it or choose another -o (nothing was changed)")
        if f == output and (written is None or sha256(output) != written):
            raise EdgepackError(f"-o {output}: exists and was not written by edgepack prune (or was changed "
                                "since); choose another -o or remove it yourself (nothing was changed)")


def prune_file(model, data, output, target_macs=None, target_params=None, val=None, holdout: float = 0.1,
               input_shape=None, command: str | None = None, trust_pickle: bool = False, **kw) -> dict:
    """Prune the model file ``model`` on ``data`` (.npz with x, y) and write ``output`` (.pt2 or .onnx) and
    ``<output>.json`` (targets, costs before / after, accuracy before / after on the validation data, every
    step). Validation data: ``val`` (.npz), else a seeded ``holdout`` fraction of ``data`` kept out of
    training. Nothing is written unless pruning succeeds; an existing output is replaced only then, and only
    if an earlier ``edgepack prune`` wrote it (its sidecar records the file's SHA-256)."""
    from pathlib import Path

    from .torch_graph import save_model

    output = Path(output)
    if output.suffix.lower() not in (".pt2", ".onnx"):
        raise EdgepackError(f"-o {output}: the output model must be .pt2 or .onnx")
    check_targets(target_macs, target_params)
    check_output_file(output, model)
    x, y = load_labelled_npz(data)
    if val is not None:
        xv, yv = load_labelled_npz(val, "--val")
    elif holdout and holdout > 0:
        perm = np.random.default_rng(kw.get("seed", 0)).permutation(len(x))
        nv = max(1, int(round(holdout * len(x))))
        xv, yv, x, y = x[perm[:nv]], y[perm[:nv]], x[perm[nv:]], y[perm[nv:]]
    else:
        xv = yv = None
    g = as_graph(model, input_shape, trust_pickle=trust_pickle)
    want = tuple(g.tensors[g.inputs[0]].shape[1:])
    for f, xs in ((data, x), (val, xv)):
        if xs is not None and tuple(xs.shape[1:]) != want:
            raise EdgepackError(f"{f}: inputs of shape {tuple(xs.shape[1:])} do not match the model input "
                                f"(N, {', '.join(map(str, want))})")
    n_out = g.tensors[g.outputs[0]].shape[-1]
    for name, lab in (("data", y), ("val", yv)):
        if lab is not None and (lab.min() < 0 or lab.max() >= n_out):
            raise EdgepackError(f"{data if name == 'data' else val}: labels span {lab.min()}..{lab.max()} but "
                                f"the model has {n_out} outputs")
    before = evaluate(TorchGraph(g), xv, yv) if xv is not None else None
    t0 = time.time()
    res = prune(g, x, y, target_macs=target_macs, target_params=target_params, x_val=xv, y_val=yv, **kw)
    after = evaluate(res.net, xv, yv) if xv is not None else None
    info = {"command": command, "model": str(model), "data": str(data), "output": str(output),
            "target_macs": target_macs, "target_params": target_params, **res.summary(),
            "validation": (str(val) if val else f"{holdout:.0%} of {data} held out (seed {kw.get('seed', 0)})")
            if xv is not None else None,
            "val_loss_before": before and before[0], "val_acc_before": before and before[1],
            "val_loss_after": after and after[0], "val_acc_after": after and after[1],
            "seconds": round(time.time() - t0, 1), "history": res.history,
            "settings": {k: v for k, v in kw.items() if isinstance(v, (int, float, str, type(None)))}}
    if not D.is_main():  # under torchrun every rank holds the same pruned model; rank 0 writes it
        return info
    save_model(res.net, output)
    from .. import provenance
    from ..outdir import sha256
    info["output_sha256"] = sha256(output)

    step = {"method": "Taylor pruning", "paper": "Molchanov et al., CVPR 2019",
            "criterion": res.criterion, "target_macs": target_macs, "target_params": target_params,
            "macs_before": res.macs_before, "macs_after": res.macs, "params_before": res.params_before,
            "params_after": res.params, "channels_before": res.channels_before, "channels_after": res.channels,
            "steps": len(res.history), "finetune_epochs": kw.get("finetune_epochs", 1.0),
            "val_acc_before": info["val_acc_before"], "val_acc_after": info["val_acc_after"]}
    prior = provenance.read(model) if not isinstance(model, (Graph, nn.Module)) else []
    provenance.write(output, prior + [step], extra=info)
    return info
