"""Training on one process or many with PyTorch's own distributed engine (``torchrun``, DDP).

Every training-time helper of edgepack (ReCU training :func:`~edgepack.compress.binarize_recu.train_binary`,
Taylor pruning :func:`~edgepack.compress.prune_taylor.prune` and its fine-tuning, and any loop that adds the
compressibility loss or trains a symmetrical head through :func:`train_loop`) runs in one process by default
and, started by ``torchrun --nproc_per_node N`` (one node or many), runs data-parallel with no change to the
calling code:

* :func:`dist_env` reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` that torchrun sets and, when
  ``WORLD_SIZE > 1``, initialises the default process group (``nccl`` with one GPU per rank when the node has
  enough GPUs, else ``gloo`` on CPU).
* :func:`wrap` puts the model in :class:`torch.nn.parallel.DistributedDataParallel` (gradients averaged over
  the ranks in the backward pass). Batchnorm: on CUDA the model's ``nn.BatchNorm*`` layers become
  ``nn.SyncBatchNorm`` (batch statistics over the global batch; :func:`unwrap` turns them back). On CPU /
  gloo ``SyncBatchNorm`` does not work ("SyncBatchNorm layers only work with GPU modules", torch 2.x), so
  there each rank normalises with the statistics of its own per-rank batch, DDP broadcasts rank 0's running
  statistics before every forward (``broadcast_buffers=True``), and :func:`sync_buffers` replaces them by
  their mean over the ranks at the end of every epoch and of training: the running statistics are the same on
  every rank at every step, and the final ones average all the shards.
* :func:`loader` shards the data with a :class:`torch.utils.data.DistributedSampler` (:class:`EpochSampler`:
  epoch e uses the e-th permutation of one generator seeded with ``seed``); in one process the same sampler runs with one replica, so **a run on N ranks with
  per-rank batch b sees exactly the global batches of a one-process run with batch N x b** (same seed).
  ``batch`` is always the per-rank batch: **global batch = batch x world size**. Data whose length is not a
  multiple of the world size is padded by repeating a few examples (DistributedSampler's rule) so every rank
  runs the same number of steps.
* Only rank 0 (:func:`is_main`) prints progress and writes checkpoints; every rank computes the same things.
* :func:`checkpoint` / :func:`resume`: rank 0 writes atomically (temporary file, then rename) the model,
  optimizer and scheduler states, the step, epoch and position inside the epoch, and the torch / numpy /
  python RNG states of every rank (gathered to rank 0). A run killed at any point and started again with the
  same arguments (``resume=True``, same seed, same world size) continues from its last checkpoint and ends
  with the same weights, bit for bit, as a run that was never interrupted. The checkpoint must be on a path
  every rank can read (a shared filesystem when running on several nodes).

Launch (see README, "Training on several processes / GPUs / nodes")::

    torchrun --nproc_per_node 4 train.py                       # one node, 4 GPUs (or 4 CPU processes)
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
             --rdzv_endpoint HOST:29500 --rdzv_id job1 train.py  # two nodes, the same command on each
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import inspect
import io
import math
import os
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["Arrays", "DistEnv", "EpochSampler", "all_reduce_mean", "barrier", "broadcast_object", "check_same", "checkpoint",
           "dist_env", "is_main", "loader", "resume", "state_hash", "sync_buffers", "train_loop", "unwrap",
           "world_size", "wrap"]


# ---- environment ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_env() -> DistEnv:
    """This process's (rank, world size, local rank, device), from torchrun's environment variables (one process:
    0, 1, 0). With ``WORLD_SIZE > 1`` the default process group is initialised here if it is not yet: nccl, one
    GPU per rank, when the node has at least as many GPUs as ranks (``LOCAL_WORLD_SIZE``), else gloo on CPU
    (rendezvous from torchrun's ``MASTER_ADDR`` / ``MASTER_PORT``). One process keeps the model where it is."""
    if tdist.is_available() and tdist.is_initialized():
        rank, ws = tdist.get_rank(), tdist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        cuda = tdist.get_backend() == "nccl"
    else:
        ws = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        local_ws = int(os.environ.get("LOCAL_WORLD_SIZE", str(ws)))
        cuda = ws > 1 and torch.cuda.is_available() and torch.cuda.device_count() >= local_ws
        if ws > 1:
            if cuda:
                torch.cuda.set_device(local)
            tdist.init_process_group("nccl" if cuda else "gloo")
            atexit.register(_close)  # a group left open can abort the process at exit (gloo's threads)
    dev = torch.device("cuda", local) if (ws > 1 and cuda) else torch.device("cpu")
    return DistEnv(rank, ws, local, dev)


def _close() -> None:
    """At exit: wait (briefly) for the other ranks, then close the group this module opened."""
    if tdist.is_available() and tdist.is_initialized():
        try:
            if tdist.get_backend() == "gloo":
                tdist.monitored_barrier(timeout=datetime.timedelta(seconds=20))
            tdist.destroy_process_group()
        except Exception:  # another rank is gone: nothing left to close cleanly
            pass


def _ready() -> bool:
    """Whether this process is one of several ranks; under torchrun the first call initialises the group."""
    if not tdist.is_available():
        return False
    if not tdist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist_env()
    return tdist.is_initialized()


def world_size() -> int:
    """The number of ranks (1 in one process)."""
    return tdist.get_world_size() if _ready() else 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that prints and writes."""
    return not _ready() or tdist.get_rank() == 0


def _on() -> bool:
    return world_size() > 1


def barrier() -> None:
    if _on():
        tdist.barrier()


def log(msg: str) -> None:
    """Print ``msg`` to stderr on rank 0 only."""
    if is_main():
        print(msg, file=sys.stderr, flush=True)


# ---- collectives --------------------------------------------------------------------------------------------
def all_reduce_mean(x):
    """Mean over the ranks of a tensor, a numpy array, a number or a dict of those (a copy; the input is not
    changed). Identity in one process. Arrays are reduced in float64."""
    if isinstance(x, dict):
        keys = list(x)
        flat = all_reduce_mean([x[k] for k in keys])
        return dict(zip(keys, flat))
    if isinstance(x, (list, tuple)):
        if not _on():
            return list(x)
        parts = [torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v) for v in x]
        buf = torch.cat([p.detach().reshape(-1).double().cpu() for p in parts]) if parts else torch.zeros(0)
        buf = _reduce(buf) / world_size()
        out, i = [], 0
        for v, p in zip(x, parts):
            n = p.numel()
            r = buf[i:i + n].reshape(p.shape)
            i += n
            if isinstance(v, torch.Tensor):
                out.append(r.to(v.dtype).to(v.device))
            elif isinstance(v, np.ndarray):
                out.append(r.numpy().astype(v.dtype))
            else:
                out.append(float(r))
        return out
    return all_reduce_mean([x])[0]


def _reduce(buf: torch.Tensor) -> torch.Tensor:
    dev = torch.device("cuda", torch.cuda.current_device()) if tdist.get_backend() == "nccl" else buf.device
    t = buf.to(dev)
    tdist.all_reduce(t)
    return t.to(buf.device)


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (identity in one process)."""
    if not _on():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def _gather_object(obj) -> list:
    if not _on():
        return [obj]
    out = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def state_hash(model_or_state) -> str:
    """SHA-256 of a state dict (names, dtypes, shapes and bytes, in order)."""
    sd = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    h = hashlib.sha256()
    for k, v in sd.items():
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous().reshape(-1)
            h.update(f"{t.dtype}{tuple(v.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def check_same(value, what: str = "value") -> None:
    """Raise RuntimeError unless ``value`` (hashed through repr, or :func:`state_hash` for a module / state
    dict) is the same on every rank. No-op in one process."""
    if not _on():
        return
    if isinstance(value, nn.Module) or (isinstance(value, dict) and value
                                        and all(isinstance(v, torch.Tensor) for v in value.values())):
        digest = state_hash(value)
    else:
        digest = hashlib.sha256(repr(value).encode()).hexdigest()
    got = _gather_object(digest)
    if len(set(got)) != 1:
        raise RuntimeError(f"{what} differs between ranks: " + ", ".join(d[:12] for d in got))


# ---- model --------------------------------------------------------------------------------------------------
def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def wrap(model: nn.Module, sync_bn: bool | None = None) -> nn.Module:
    """``model`` in DistributedDataParallel when running on several ranks (moved to this rank's GPU when there
    is one); the model itself in one process. ``sync_bn`` (default: on CUDA only) converts ``nn.BatchNorm*``
    to ``nn.SyncBatchNorm`` in place; :func:`finish` turns them back. See the module docstring for CPU."""
    env = dist_env()
    if not env.distributed:
        return model
    if env.device.type == "cuda":
        model.to(env.device)
    if sync_bn is None:
        sync_bn = env.device.type == "cuda"
    if sync_bn:
        model = _to_sync_bn(model)
    ids = [env.local_rank] if env.device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # rank 0's buffers before every forward; the option's name changed in torch 2.13
    opt = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters \
        else "broadcast_buffers"
    return ddp(model, device_ids=ids, **{opt: True})


def _to_sync_bn(model):
    kinds = {name: type(m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    conv = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, m in conv.named_modules():
        if isinstance(m, nn.SyncBatchNorm) and name in kinds:
            m._edgepack_cls = kinds[name]
    return conv


def _from_sync_bn(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.SyncBatchNorm):
        cls = getattr(module, "_edgepack_cls", nn.BatchNorm2d)
        out = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        out.load_state_dict(module.state_dict())
        out.to(next(iter(module.state_dict().values())).device)
        out.train(module.training)
    for name, child in module.named_children():
        new = _from_sync_bn(child)
        if new is not child:
            setattr(out, name, new)
    return out


def finish(model: nn.Module) -> nn.Module:
    """The trained module: unwrapped from DDP, SyncBatchNorm turned back into BatchNorm, buffers averaged."""
    inner = unwrap(model)
    sync_buffers(inner)
    return _from_sync_bn(inner) if any(isinstance(m, nn.SyncBatchNorm) for m in inner.modules()) else inner


@torch.no_grad()
def sync_buffers(model: nn.Module) -> None:
    """Floating-point buffers (batchnorm running statistics) replaced by their mean over the ranks; integer
    buffers (``num_batches_tracked``) taken from rank 0. No-op in one process."""
    if not _on():
        return
    model = unwrap(model)
    fl = [(k, b) for k, b in model.named_buffers() if b is not None and b.is_floating_point()]
    if fl:
        for (k, b), m in zip(fl, all_reduce_mean([b for _, b in fl])):
            b.copy_(m)
    ints = [b for _, b in model.named_buffers() if b is not None and not b.is_floating_point()]
    for b in ints:
        t = b.clone()
        if tdist.get_backend() == "nccl":
            t = t.cuda()
        tdist.broadcast(t, 0)
        b.copy_(t.to(b.device))


# ---- data ---------------------------------------------------------------------------------------------------
class Arrays(Dataset):
    """(x, y) arrays or tensors as a Dataset; batches are gathered with one index operation."""

    def __init__(self, x, y):
        self.x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        self.y = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(y))
        if len(self.x) != len(self.y):
            raise ValueError(f"data: {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def __getitems__(self, idx):
        idx = torch.as_tensor(idx, dtype=torch.long)
        return self.x[idx], self.y[idx]


def _pass(batch):
    return batch


class EpochSampler(DistributedSampler):
    """DistributedSampler whose epoch-``e`` order is the ``e``-th ``randperm`` of one generator seeded with
    ``seed`` (DistributedSampler itself reseeds with ``seed + epoch``): in one process it keeps the batch order
    edgepack's training helpers always had; on N ranks each rank takes every N-th index of that order (after
    the usual padding), so the global batches are those of one process with an N times larger batch."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._cache = (0, torch.Generator().manual_seed(self.seed).get_state())

    def _order(self) -> list:
        n = len(self.dataset)
        e0, st = self._cache
        g = torch.Generator()
        if e0 > self.epoch:
            e0, st = 0, torch.Generator().manual_seed(self.seed).get_state()
        g.set_state(st)
        for _ in range(e0, self.epoch):
            torch.randperm(n, generator=g)
        self._cache = (self.epoch, g.get_state())
        return torch.randperm(n, generator=g).tolist()

    def __iter__(self):
        idx = self._order() if self.shuffle else list(range(len(self.dataset)))
        if not self.drop_last:
            pad = self.total_size - len(idx)
            idx += (idx * math.ceil(pad / len(idx)))[:pad] if pad > 0 else []
        else:
            idx = idx[:self.total_size]
        return iter(idx[self.rank:self.total_size:self.num_replicas])


class _BatchSampler:
    """Per-rank batches of a DistributedSampler, starting at batch ``start`` (resume inside an epoch)."""

    def __init__(self, sampler, batch: int, drop_last: bool = False):
        self.sampler, self.batch, self.drop_last, self.start = sampler, batch, drop_last, 0

    def __iter__(self):
        idx = list(self.sampler)
        n = len(idx) // self.batch * self.batch if self.drop_last else len(idx)
        for k, i in enumerate(range(0, n, self.batch)):
            if k >= self.start:
                yield idx[i:i + self.batch]

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch if self.drop_last else (n + self.batch - 1) // self.batch


def loader(data, batch: int = 64, seed: int = 0, epoch: int = 0, shuffle: bool = True,
           drop_last: bool = False) -> DataLoader:
    """A DataLoader over this rank's shard: ``data`` is (x, y) arrays / tensors, a Dataset, or a DataLoader
    (rebuilt over its dataset with ``batch``: its collate_fn, num_workers and pin_memory are kept, its sampler
    and batch size are replaced).
    ``batch`` is the per-rank batch (global batch = batch x world size). The sampler is an
    :class:`EpochSampler` (a DistributedSampler; one process runs it with one replica), so the global batches
    do not depend on the world size; ``loader.edgepack_sampler.set_epoch(e)`` reshuffles (as
    :func:`train_loop` does every epoch)."""
    kw = {}
    if isinstance(data, DataLoader):
        kw = dict(collate_fn=data.collate_fn, num_workers=data.num_workers, pin_memory=data.pin_memory)
        data = data.dataset
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        data = Arrays(*data)
        kw = dict(collate_fn=_pass)
    elif not isinstance(data, Dataset):
        raise TypeError("data must be (x, y) arrays, a Dataset or a DataLoader")
    ws = world_size()
    rank = tdist.get_rank() if ws > 1 else 0
    sampler = EpochSampler(data, num_replicas=ws, rank=rank, shuffle=shuffle, seed=seed)
    sampler.set_epoch(epoch)
    bs = _BatchSampler(sampler, batch, drop_last)
    dl = DataLoader(data, batch_sampler=bs, **kw)
    dl.edgepack_sampler = sampler
    dl.edgepack_batches = bs
    return dl


# ---- checkpoints --------------------------------------------------------------------------------------------
def _rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def checkpoint(path, state: dict) -> None:
    """Write ``state`` (anything torch.save takes) plus every rank's RNG states to ``path``: a collective (every
    rank must call it), rank 0 writes, atomically (a temporary file renamed over ``path``), so a kill at any
    moment leaves the previous or the new checkpoint, never a torn one."""
    rngs = _gather_object(_rng_state())
    if is_main():
        path = os.fspath(path)
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        buf = io.BytesIO()
        torch.save({**state, "rng": rngs, "world_size": world_size()}, buf)
        with open(tmp, "wb") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    barrier()


def _load_checkpoint(path):
    """torch.load with the weights-only unpickler, allowing what edgepack's checkpoints hold beyond tensors
    (numpy arrays and RNG states, edgepack graphs): a checkpoint file is never a way to run code."""
    from torch.serialization import safe_globals

    from ..graph import Graph, Node, QParams, Tensor
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    dtypes = {type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFD"}
    try:
        with safe_globals([Graph, Node, QParams, Tensor, np.ndarray, np.dtype, _reconstruct, *dtypes]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if "Weights only load failed" in str(e):
            raise RuntimeError(f"{path}: the checkpoint holds objects beyond tensors, arrays and edgepack graphs; "
                               "edgepack does not unpickle them (delete the checkpoint to start afresh)") from None
        raise


def resume(path) -> dict | None:
    """The checkpoint at ``path`` (loaded on CPU), or None if there is none. Refuses a checkpoint written with
    another world size (the data shards and RNG streams would not continue the same run). Does not restore the
    RNG states: :func:`train_loop` does that at the exact point where they were saved."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return None
    st = _load_checkpoint(path)
    if st.get("world_size", 1) != world_size():
        raise RuntimeError(f"{path}: written by a run on {st.get('world_size')} ranks, this run has "
                           f"{world_size()}; resume needs the same world size")
    return st


# ---- the loop -----------------------------------------------------------------------------------------------
def _to(batch, dev):
    if isinstance(batch, torch.Tensor):
        return batch.to(dev, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, dev) for b in batch)
    if isinstance(batch, dict):
        return {k: _to(v, dev) for k, v in batch.items()}
    return batch


def train_loop(model: nn.Module, data, loss_fn=None, epochs: int = 1, batch: int = 64, lr: float = 1e-3,
               seed: int = 0, optimizer=None, scheduler="cosine", on_step=None, extra_loss=None,
               checkpoint_path=None, checkpoint_every: int | None = None, resume_from: bool = True,
               progress: bool = True, tag: str = "train", sync_bn: bool | None = None,
               weight_decay: float = 0.0, report=None, teacher: nn.Module | None = None) -> tuple[nn.Module, list]:
    """Train ``model`` on ``data`` (see :func:`loader`) for ``epochs`` epochs, in one process or data-parallel
    under torchrun (module docstring). Returns (the trained module, unwrapped and in eval mode, one dict per
    epoch: loss and accuracy averaged over all ranks).

    * ``loss_fn(out, y)``: default cross entropy on logits; ``extra_loss(module)``: a term added to the loss
      of every step computed on the unwrapped module (e.g. ``lambda m: compressibility_loss(m, lam)``).
    * ``optimizer``: a factory ``f(params) -> Optimizer`` (default Adam(lr, weight_decay)); ``scheduler``:
      "cosine" (cosine annealing to 0 over all steps), "onecycle", "none" or a factory ``f(opt, steps)``;
      stepped once per optimizer step.
    * ``on_step(step, steps, module)``: called before every optimizer step with the global step (the same on
      every rank; e.g. ReCU's tau).
    * ``checkpoint_path``: rank 0 writes a checkpoint every ``checkpoint_every`` steps (default: every epoch)
      and at the end; with ``resume_from`` an existing checkpoint there is resumed (same seed and world size
      give bit-identical weights to an uninterrupted run).
    * ``report(epoch_record) -> str``: the progress line (rank 0, stderr, once per epoch).
    * ``teacher``: a module (e.g. the float model for distillation) run in eval mode without gradients on
      every minibatch; the loss is then ``loss_fn(out, y, teacher(x))``.
    ``batch`` is per rank: global batch = batch x world size. Progress is printed by rank 0 only."""
    env = dist_env()
    torch.manual_seed(seed)
    loss_fn = loss_fn or F.cross_entropy
    inner = model
    if env.device.type == "cuda":
        inner.to(env.device)
    dev = next(inner.parameters()).device
    if teacher is not None:
        teacher.to(dev).eval()
    dl = loader(data, batch, seed, 0)
    per_epoch = len(dl)
    steps = max(1, epochs * per_epoch)
    opt = optimizer(inner.parameters()) if optimizer else \
        torch.optim.Adam(inner.parameters(), lr=lr, weight_decay=weight_decay)
    if callable(scheduler):
        sched = scheduler(opt, steps)
    elif scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    elif scheduler == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    elif scheduler in (None, "none"):
        sched = None
    else:
        raise ValueError(f"scheduler must be 'cosine', 'onecycle', 'none' or a factory, got {scheduler!r}")
    step, start_epoch, history, rng, part = 0, 0, [], None, None
    if checkpoint_path is not None and resume_from:
        st = resume(checkpoint_path)
        if st is not None:
            if st["steps"] != steps:
                raise RuntimeError(f"{checkpoint_path}: a run of {st['steps']} steps, this one has {steps}")
            inner.load_state_dict(st["model"])
            opt.load_state_dict(st["optimizer"])
            if sched is not None and st.get("scheduler") is not None:
                sched.load_state_dict(st["scheduler"])
            step, history = st["step"], st["history"]
            start_epoch = step // per_epoch
            rng = st["rng"][env.rank]
            part = st["epoch_sums"][env.rank]
            log(f"[{tag}] resumed from {checkpoint_path} at step {step}/{steps}")
    net = wrap(inner, sync_bn)
    inner = unwrap(net)
    every = checkpoint_every or per_epoch

    def save():
        part_all = _gather_object(sums.clone())
        checkpoint(checkpoint_path, {"model": unwrap(net).state_dict(), "optimizer": opt.state_dict(),
                                     "scheduler": sched.state_dict() if sched is not None else None,
                                     "step": step, "epoch": step // per_epoch, "batch_in_epoch": step % per_epoch,
                                     "steps": steps, "seed": seed, "history": history,
                                     "epoch_sums": part_all})

    t0 = time.time()
    net.train()
    sums = torch.zeros(3, dtype=torch.float64)  # loss * n, correct, n: this rank, this epoch so far
    if rng is not None and (step % per_epoch == 0 or step >= steps):
        _set_rng_state(rng)  # saved between epochs: before the next epoch's iterator draws from the RNG
        rng = None
    for ep in range(start_epoch, epochs):
        dl.edgepack_sampler.set_epoch(ep)
        dl.edgepack_batches.start = step - ep * per_epoch
        it = iter(dl)
        if rng is not None:  # saved inside an epoch: after the iterator's creation drew from the RNG
            _set_rng_state(rng)
            rng = None
        if part is not None and step % per_epoch:
            sums = part.clone()
        else:
            sums = torch.zeros(3, dtype=torch.float64)
        part = None
        for xb, yb in it:
            xb, yb = _to(xb, dev), _to(yb, dev)
            if on_step is not None:
                on_step(step, steps, inner)
            opt.zero_grad(set_to_none=True)
            out = net(xb)
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(xb)
                loss = loss_fn(out, yb, t_out)
            else:
                loss = loss_fn(out, yb)
            if extra_loss is not None:
                loss = loss + extra_loss(inner)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            step += 1
            with torch.no_grad():
                n = len(yb)
                sums[0] += float(loss.detach()) * n
                if out.dim() == 2 and yb.dim() == 1:
                    sums[1] += int((out.argmax(1) == yb).sum())
                sums[2] += n
            if step % per_epoch == 0:
                sync_buffers(net)
            if checkpoint_path is not None and step % every == 0 and step < steps and step % per_epoch:
                save()
        tot = sums if not _on() else _sum(sums)
        rec = {"epoch": ep + 1, "loss": float(tot[0] / max(tot[2], 1)), "acc": float(tot[1] / max(tot[2], 1)),
               "seconds": round(time.time() - t0, 1)}
        history.append(rec)
        if progress and report is not None:
            log(report(rec))
        elif progress:
            log(f"[{tag}] epoch {ep + 1}/{epochs}: loss {rec['loss']:.4f}, train acc {rec['acc']:.4f}, "
                f"{rec['seconds']} s ({env.world_size} rank(s), global batch {batch * env.world_size})")
        if checkpoint_path is not None and step % every == 0 and step < steps:
            save()  # at the end of an epoch: after its record
    sync_buffers(net)
    if checkpoint_path is not None:
        save()
    return finish(net).eval(), history


def _sum(t: torch.Tensor) -> torch.Tensor:
    return _reduce(t.clone())
