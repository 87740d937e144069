"""Training under torch.distributed: `torchrun --nproc_per_node 2` (gloo, CPU) on an MNIST-5k subset.

* ReCU training (train_binary) and one Taylor pruning step (prune) end with the same state dict on both ranks
  (SHA-256), the pruning step removes the same channels on both ranks, and the 2-rank ReCU model's test
  accuracy is within ACC_TOL of one process trained with the same global batch.
* Kill and resume: a 2-rank run killed after its checkpoint at step 60 and started again ends with exactly
  the state dict (hash) of the uninterrupted run; the same in one process.

This file is also the worker torchrun starts: ``python -m torch.distributed.run --standalone
--nproc_per_node 2 tests/test_distributed.py --out DIR [--die-at STEP] [--prune]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "toolchain", ROOT / "examples"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

# The run every test shares: 2,000 training images (200 per digit), 1,000 test images, 8 epochs of global
# batch 64 (2 ranks x 32, or 1 process x 64): 32 steps per epoch, 256 steps.
N_TRAIN, EPOCHS, GLOBAL_BATCH, LR, SEED, CKPT_EVERY = 2000, 8, 64, 3e-3, 0, 20
# Accuracy tolerance, 2 ranks vs 1 process (same seed, same global batches: EpochSampler gives both runs the
# same 64 examples per step and DDP averages the two per-rank mean gradients, which equals the one-process
# mean gradient). What differs: (1) batchnorm normalises each rank's 32 examples with their own statistics
# (SyncBatchNorm needs a GPU), not the 64 examples' statistics, so forward outputs and gradients differ
# slightly from step 1; (2) float summation order of the all-reduce. A binary network amplifies such small
# differences (a latent weight near 0 flips sign), so the two runs are two nearby trajectories, not one.
# Measured (1,000 test images, 2 CPU ranks x 32 vs 1 process x 64): seeds 0/1/2/3 give 0.935/0.933/0.943/0.937
# vs 0.934/0.937/0.944/0.945, gaps of at most 0.8 points; the one-process seed-to-seed range is 1.1 points and
# the binomial standard error of one accuracy near 0.94 on 1,000 images is 0.75 points. We allow 3 points
# (4 standard errors): the gap of two equally good runs, not a claim of bit-equality (the weight hashes of the
# 1- and 2-process runs differ; equality of the global batches is checked exactly by the loader test).
ACC_TOL = 0.03


def _data():
    from mnist_common import mnist5k

    xtr, ytr, xte, yte = mnist5k()
    per = N_TRAIN // 10
    keep = np.concatenate([np.flatnonzero(ytr == d)[:per] for d in range(10)])
    return xtr[keep], ytr[keep], xte, yte


def _recu_model():
    from edgepack.compress.binarize_recu import binarize

    torch.manual_seed(SEED)
    m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.Hardtanh(),
                      nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.Hardtanh(),
                      nn.Conv2d(32, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                      nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
    binarize(m, first_last_int8=True, method="recu")
    return m


def _acc(model, x, y) -> float:
    with torch.no_grad():
        return float((model.eval()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def train_recu(batch, checkpoint=None, die_at=None):
    """(model, test accuracy, seconds): train_binary on the subset with per-rank ``batch``."""
    from edgepack.compress.binarize_recu import train_binary

    xtr, ytr, xte, yte = _data()
    m = _recu_model()

    def die(step, steps, module):
        if die_at is not None and step == die_at:
            os._exit(3)  # a kill: no cleanup, no checkpoint

    t0 = time.time()
    train_binary(m, xtr, ytr, epochs=EPOCHS, batch=batch, lr=LR, seed=SEED, progress=False,
                 checkpoint=checkpoint, checkpoint_every=CKPT_EVERY, on_step=die)
    return m, _acc(m, xte, yte), time.time() - t0


def prune_step(batch):
    """One Taylor pruning step (up to 5 channels, to 75 % of the MACs) of a small float CNN after 10 fine-tuning minibatches."""
    from edgepack.compress import prune_taylor as pt
    from mnist_common import ResidualCNN

    xtr, ytr, xte, yte = _data()
    torch.manual_seed(SEED)
    m = ResidualCNN(c=8).eval()
    t0 = time.time()
    res = pt.prune(m, xtr, ytr, target_macs=0.75, per_step=5, step_batches=10, batch=batch, lr=1e-3,
                   finetune_epochs=0, seed=SEED, progress=False, input_shape=(1, 1, 28, 28))
    return res, time.time() - t0


def worker(argv):
    import argparse

    from types import SimpleNamespace

    from edgepack.compress import distributed as D
    from edgepack.compress import prune_taylor as pt

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--die-at", type=int)
    ap.add_argument("--prune", action="store_true")
    a = ap.parse_args(argv)
    env = D.dist_env()
    torch.set_num_threads(1)
    batch = GLOBAL_BATCH // env.world_size
    out = {"rank": env.rank, "world_size": env.world_size}
    m, acc, sec = train_recu(batch, checkpoint=os.path.join(a.out, "recu.ckpt"), die_at=a.die_at)
    out.update(recu_hash=D.state_hash(m), recu_acc=acc, recu_seconds=round(sec, 1))
    if a.prune:
        res, sec = prune_step(batch)
        acc = pt._Scores([SimpleNamespace(gates=["g"], size=2, id=0)])
        acc.add({"g": np.full(2, env.rank + 1.0)})
        acc.all_reduce()
        out["scores_after_all_reduce"] = acc.by_group()[0].tolist()
        out.update(prune_hash=D.state_hash(res.net), prune_removed=[h["removed"] for h in res.history],
                   prune_macs=res.macs, prune_seconds=round(sec, 1))
    Path(a.out, f"rank{env.rank}.json").write_text(json.dumps(out))
    D.barrier()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


# ---- the tests ------------------------------------------------------------------------------------------------
def _torchrun(out, *args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "toolchain"), str(ROOT / "examples"), os.environ.get("PYTHONPATH", "")])}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(Path(__file__).resolve()), "--out", str(out), *args]
    t0 = time.time()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return p, time.time() - t0


def _ranks(out):
    return [json.loads(Path(out, f"rank{r}.json").read_text()) for r in (0, 1)]



@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_full")
    p, sec = _torchrun(out, "--prune")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    r = _ranks(out)
    r[0]["launch_seconds"] = round(sec, 1)
    return out, r


def test_recu_two_ranks_same_weights_and_accuracy(two_ranks):
    _, (r0, r1) = two_ranks
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["recu_hash"] == r1["recu_hash"]
    assert r0["recu_acc"] == r1["recu_acc"]
    m, acc1, sec1 = train_recu(GLOBAL_BATCH)  # one process, same global batch, same seed
    print(f"ReCU test accuracy: 2 ranks x {GLOBAL_BATCH // 2} {r0['recu_acc']:.4f} ({r0['recu_seconds']} s), "
          f"1 process x {GLOBAL_BATCH} {acc1:.4f} ({sec1:.1f} s), launch {r0['launch_seconds']} s")
    assert acc1 > 0.8 and r0["recu_acc"] > 0.8
    assert abs(r0["recu_acc"] - acc1) <= ACC_TOL


def test_prune_step_two_ranks_identical(two_ranks):
    _, (r0, r1) = two_ranks
    assert r0["prune_removed"] == r1["prune_removed"]
    assert len(r0["prune_removed"]) == 1 and sum(r0["prune_removed"][0].values()) >= 2  # one step
    # _Scores.all_reduce: rank r added r + 1 to every score; both ranks now hold the mean, 1.5
    assert r0["scores_after_all_reduce"] == r1["scores_after_all_reduce"] == [1.5, 1.5]
    assert r0["prune_hash"] == r1["prune_hash"]
    assert r0["prune_macs"] == r1["prune_macs"]


def test_kill_and_resume_two_ranks(two_ranks, tmp_path):
    _, (r0, _) = two_ranks  # the uninterrupted run (it wrote checkpoints too)
    p, _ = _torchrun(tmp_path, "--die-at", "70")
    assert p.returncode != 0  # killed at step 70; its last checkpoint is step 60
    assert not list(tmp_path.glob("rank*.json"))
    st = torch.load(tmp_path / "recu.ckpt", weights_only=False)
    assert st["step"] == 60 and st["world_size"] == 2 and len(st["rng"]) == 2
    p, _ = _torchrun(tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "resumed from" in p.stderr and "at step 60/256" in p.stderr
    s0, s1 = _ranks(tmp_path)
    assert s0["recu_hash"] == s1["recu_hash"] == r0["recu_hash"]


@pytest.mark.parametrize("every, stop, last", [(5, 13, 10), (4, 10, 8)])  # inside an epoch / at its end
def test_kill_and_resume_one_process(tmp_path, every, stop, last):
    """One process, small: stopped by an exception at step ``stop`` (last checkpoint at step ``last``; 8 steps
    per epoch), resumed, same weights as an uninterrupted run; a checkpoint of another world size is
    refused."""
    from edgepack.compress import distributed as D
    from edgepack.compress.binarize_recu import train_binary

    xtr, ytr, _, _ = _data()
    x, y = xtr[::8], ytr[::8]  # 250 images, 8 steps per epoch of 32

    def run(ck, stop=None):
        m = _recu_model()

        def hook(step, steps, module):
            if step == stop:
                raise KeyboardInterrupt

        train_binary(m, x, y, epochs=3, batch=32, lr=LR, seed=1, progress=False, checkpoint=ck,
                     checkpoint_every=every, on_step=hook)
        return m

    ref = run(None)
    ck = tmp_path / "a.ckpt"
    with pytest.raises(KeyboardInterrupt):
        run(ck, stop=stop)
    assert torch.load(ck, weights_only=False)["step"] == last
    assert D.state_hash(run(ck)) == D.state_hash(ref)
    # resuming a finished run changes nothing
    assert D.state_hash(run(ck)) == D.state_hash(ref)
    st = torch.load(ck, weights_only=False)
    st["world_size"] = 2
    torch.save(st, ck)
    with pytest.raises(RuntimeError, match="same world size"):
        run(ck)


def test_train_loop_inputs_and_extra_loss():
    """train_loop takes (x, y) arrays, a Dataset or a DataLoader (the same batches, the same weights), and an
    extra loss term on the module (the compressibility loss)."""
    from torch.utils.data import DataLoader, TensorDataset

    from edgepack.compress import distributed as D
    from edgepack.compress.losses import compressibility_loss

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 6, generator=g), torch.randint(0, 3, (96,), generator=g)
    hashes = []
    for data in ((x.numpy(), y.numpy()), TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=5)):
        torch.manual_seed(0)
        m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        m, hist = D.train_loop(m, data, epochs=2, batch=16, lr=1e-2, seed=4, progress=False,
                               extra_loss=lambda mod: compressibility_loss(mod, 1e-3))
        assert [h["epoch"] for h in hist] == [1, 2] and not m.training
        hashes.append(D.state_hash(m))
    assert len(set(hashes)) == 1


def test_loader_global_batches_do_not_depend_on_world_size():
    """EpochSampler: the union of the ranks' k-th batches is one process's k-th batch of the doubled size."""
    from edgepack.compress.distributed import Arrays, EpochSampler, _BatchSampler

    ds = Arrays(np.zeros((100, 1), np.float32), np.arange(100))
    for epoch in (0, 3):
        one = EpochSampler(ds, num_replicas=1, rank=0, seed=5)
        one.set_epoch(epoch)
        two = [EpochSampler(ds, num_replicas=2, rank=r, seed=5) for r in (0, 1)]
        for s in two:
            s.set_epoch(epoch)
        b1 = list(_BatchSampler(one, 20))
        b2 = [list(_BatchSampler(s, 10)) for s in two]
        assert len(b1) == len(b2[0]) == len(b2[1]) == 5
        for k in range(5):
            assert sorted(b1[k]) == sorted(b2[0][k] + b2[1][k])
    # epoch e is the e-th permutation of one generator (train_binary's order before it ran on DDP)
    g = torch.Generator().manual_seed(5)
    perms = [torch.randperm(100, generator=g).tolist() for _ in range(4)]
    s = EpochSampler(ds, num_replicas=1, rank=0, seed=5)
    for e in (2, 0, 3):
        s.set_epoch(e)
        assert list(s) == perms[e]


if __name__ == "__main__":
    worker(sys.argv[1:])
