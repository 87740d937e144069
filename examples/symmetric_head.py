"""Symmetrical classifier layer (Kansizoglou, Bampis, Gasteratos, TNNLS 2022) against trainable heads on
MNIST-5k: accuracy, whether the class weight vectors point at the class centres, and how reproducible the
training-loss curve is across seeds.

    python examples/symmetric_head.py [--out build/symmetric_head] [--seeds 4] [--epochs 6] [--quick]

Two backbones, both the residual CNN of examples/mnist_common.py without its last layer, trained from scratch
for every run the way mnist_common.train trains (Adam, one-cycle lr 3e-3, batch 64, 6 epochs):

    relu6     its 784-d flattened features, which end in a ReLU6 and so are non-negative
    embed64   the same followed by nn.Linear(784, 64): signed 64-d features, the usual setting of
              feature-learning losses (and closer to what a plane through the origin can separate)

Data: the 4,000 MNIST-5k training digits; test accuracy on the 1,000 held-out ones. Heads x losses (scale
s = 16 as in the official code, ArcFace margin m = 0.3 rad):

    linear / ce         nn.Linear (with bias), softmax cross-entropy: the usual classifier
    linear / arc        the same free weight matrix with its rows normalised (the ArcFace head), ArcFace loss
    cosine / ce         the same normalised head, cross-entropy on s cos (NormFace; ArcFace with m = 0)
    symmetric / ce      SymmetricHead(fixed=True): a fixed regular 10-gon in a seeded random plane, s cos
    symmetric / arc     the same, ArcFace loss
    symmetric-plane/ce  SymmetricHead(fixed=False): the paper's constrained layer, plane learned
    symmetric-plane/arc the same, ArcFace loss

Each run uses --seeds seeds (seed = backbone init, data order, and the symmetric plane). Measured per run: test
accuracy; at the end of training, cos(w_c, mean training feature of class c) for each class (mean and min over
the 10 classes, edgepack.compress.symmetric_head.class_centre_cosines); the mean training loss of every epoch.
Per backbone/head/loss: the std of the loss across seeds at every epoch and its mean over epochs ("loss spread"),
also divided by the mean loss ("relative spread", since the margin loss lives on a larger scale).
Writes results.json and symmetric_head.png (loss curves mean +- std across seeds; the cosines).

Measured (default run: 4 seeds x 6 epochs per line, one CPU thread on a shared 2-core machine, 233 s; "loss
spread" = std across seeds of the epoch loss, mean over epochs; "relative" = the same divided by the mean loss;
cos = cos(w_c, class mean feature), mean / min over the 10 classes, averaged over seeds):

    backbone head/loss             acc mean  acc std  cos mean  cos min  loss spread  relative  final loss
    relu6    linear/ce               0.9652   0.0039    0.2137   0.1727       0.0196    0.0751      0.0440
    relu6    linear/arc              0.9617   0.0040    0.7817   0.7492       0.0592    0.0344      0.7443
    relu6    cosine/ce               0.9672   0.0019    0.4491   0.4073       0.0198    0.0498      0.1088
    relu6    symmetric/ce            0.6267   0.0165    0.1548   0.1225       0.0158    0.0096      1.3507
    relu6    symmetric/arc           0.6415   0.0123    0.1672   0.1284       0.0188    0.0031      5.7480
    relu6    symmetric-plane/ce      0.6528   0.0156    0.1864   0.1474       0.0176    0.0114      1.2571
    relu6    symmetric-plane/arc     0.6623   0.0056    0.2090   0.1597       0.0220    0.0037      5.5812
    embed64  linear/ce               0.9620   0.0020    0.8719   0.8072       0.0122    0.0775      0.0215
    embed64  linear/arc              0.9685   0.0009    0.9665   0.9393       0.0735    0.0688      0.1048
    embed64  cosine/ce               0.9602   0.0054    0.8255   0.7628       0.0297    0.0667      0.0156
    embed64  symmetric/ce            0.7757   0.0151    0.8210   0.6328       0.0382    0.0393      0.5279
    embed64  symmetric/arc           0.8033   0.0054    0.9986   0.9949       0.0942    0.0292      1.5748
    embed64  symmetric-plane/ce      0.7690   0.0127    0.8226   0.6333       0.0363    0.0357      0.5259
    embed64  symmetric-plane/arc     0.8025   0.0081    0.9988   0.9955       0.1013    0.0330      1.5696

Does the paper's claim hold here? Mostly not.

* Weights as class centres. Only with signed features and the margin loss: on embed64 the symmetric head's
  rows are the class mean directions (cos 0.999, worst class 0.995, against 0.967 / 0.939 for the trainable
  ArcFace head). With plain cross-entropy the symmetric head is no better than a free linear layer (0.82,
  worst class 0.63, against 0.87 / 0.81). On the non-negative relu6 features the symmetric head fails
  outright (cos 0.15-0.21, accuracy 0.63-0.66): the rows sum to zero, so they have mixed signs, and a
  non-negative feature reaches at most cos = ||max(w_c, 0)|| (about 0.7 here) with its own row while staying
  nearly as close to the neighbouring rows; every trainable head adapts instead (linear/ce leaves cos at 0.21
  and still reaches 0.965).
* Stability. The trainable heads were not unstable here: smooth, monotone loss curves, test accuracy std 0.1-0.5
  points across seeds (every loss curve of every run decreases at every epoch). The symmetric head does not
  reduce the absolute seed-to-seed spread of the loss (embed64: 0.036-0.101 against 0.012-0.074); its relative
  spread is lower (0.03-0.04 against 0.07-0.08), on relu6 only because its loss hardly moves. Its accuracy varies
  more across seeds (std 0.5-1.7 points).
* Accuracy. Ten classes on one plane is a 2-D bottleneck: 0.77-0.80 against 0.96-0.97 on embed64. Not only
  slow training: one seed trained 20 epochs reaches 0.81 (ce) / 0.84 (arc) test with 0.96 training accuracy.
* A learned plane (the paper's layer) and a fixed one measure the same.

One small dataset, one small backbone, a short schedule and 4 seeds: this does not refute the paper's
face-recognition results with large embeddings and long training, but on this task the layer costs
16-34 points of accuracy and buys no stability that was missing.

Export: the trained heads are a constant matrix; ``export_ready(model)`` swaps each head for a plain
``nn.Linear`` (weight s W, feature normalisation dropped: same argmax) that torch.export / edgepack build
accept (tests/test_symmetric_head.py builds one for the host).

--quick: 2 seeds, 2 epochs on a quarter of the training set (a ~10 s smoke run; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_common import ResidualCNN, mnist5k, train  # noqa: E402

from edgepack.compress.symmetric_head import (ArcMarginLoss, CosineHead, SymmetricHead,  # noqa: E402
                                              class_centre_cosines)

SCALE, MARGIN = 16.0, 0.3
BACKBONES = {"relu6": None, "embed64": 64}  # feature layer: mnist_common's 784-d ReLU6 output, or + Linear(784, 64)
CONFIGS = [("linear", "ce"), ("linear", "arc"), ("cosine", "ce"), ("symmetric", "ce"), ("symmetric", "arc"),
           ("symmetric-plane", "ce"), ("symmetric-plane", "arc")]


class Net(nn.Module):
    """ResidualCNN's layers up to the flattened 784-d features (non-negative: the last conv ends in ReLU6),
    optionally a linear embedding to ``embed`` signed features, then ``head``."""

    def __init__(self, head_kind: str, seed: int, embed: int | None = None, width: int = 8, classes: int = 10):
        super().__init__()
        self.backbone = ResidualCNN(width)
        d = 2 * width * 7 * 7
        self.backbone.fc = nn.Identity() if embed is None else nn.Linear(d, embed)
        d = embed or d
        if head_kind == "linear":
            self.head = nn.Linear(d, classes)
        elif head_kind == "cosine":
            self.head = CosineHead(d, classes, scale=SCALE, seed=seed)
        elif head_kind == "symmetric":
            self.head = SymmetricHead(d, classes, scale=SCALE, fixed=True, seed=seed)
        elif head_kind == "symmetric-plane":
            self.head = SymmetricHead(d, classes, scale=SCALE, fixed=False, seed=seed)
        else:
            raise ValueError(head_kind)

    def forward(self, x):
        return self.head(self.backbone(x))


def make_net(backbone: str, head: str, loss: str, seed: int) -> Net:
    # ArcFace needs unit rows: the "linear" head under the margin loss is the row-normalised (cosine) head
    torch.manual_seed(seed)
    return Net("cosine" if (head, loss) == ("linear", "arc") else head, seed, BACKBONES[backbone])


def train_run(net: Net, loss_kind: str, x, y, epochs: int, seed: int, batch: int = 64, lr: float = 3e-3):
    """mnist_common.train's schedule with a choice of loss; returns the mean training loss of every epoch."""
    arc = ArcMarginLoss(scale=SCALE, margin=MARGIN)

    def loss_fn(m, xb, yb):
        f = m.backbone(xb)
        return arc(m.head.cosine(f), yb) if loss_kind == "arc" else F.cross_entropy(m.head(f), yb)

    curve = []
    train(net, x, y, epochs=epochs, batch=batch, lr=lr, seed=seed, progress=False, loss_fn=loss_fn, curve=curve)
    return curve


@torch.no_grad()
def features(net: Net, x, batch: int = 500):
    return torch.cat([net.backbone(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)])


def plot(path: Path, runs: list[dict]):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbones = list(dict.fromkeys(r["backbone"] for r in runs))
    fig, axes = plt.subplots(len(backbones), 2, figsize=(13, 4.6 * len(backbones)), squeeze=False)
    for (a1, a2), bb in zip(axes, backbones):
        sel = [r for r in runs if r["backbone"] == bb]
        for r in sel:
            c = np.array(r["loss_curves"])
            m, s = c.mean(0), c.std(0)
            ep = np.arange(1, c.shape[1] + 1)
            ls = "--" if r["loss"] == "arc" else "-"
            line, = a1.plot(ep, m, ls, marker="o", ms=3, label=f"{r['head']}/{r['loss']}")
            a1.fill_between(ep, m - s, m + s, color=line.get_color(), alpha=0.25)
        a1.set_yscale("log")
        a1.set_xlabel("epoch")
        a1.set_ylabel("training loss (mean ± std over seeds)")
        a1.legend(fontsize=8)
        a1.set_title(f"{bb}: loss curves")
        xs = np.arange(len(sel))
        a2.bar(xs - 0.2, [r["cos_mean"] for r in sel], 0.4, label="mean over classes",
               yerr=[np.std([s["cos_mean"] for s in r["per_seed"]]) for r in sel])
        a2.bar(xs + 0.2, [r["cos_min"] for r in sel], 0.4, label="min over classes",
               yerr=[np.std([s["cos_min"] for s in r["per_seed"]]) for r in sel])
        a2.set_xticks(xs, [f"{r['head']}/{r['loss']}" for r in sel], rotation=30, ha="right", fontsize=8)
        a2.set_ylim(min(0.0, min(r["cos_min"] for r in sel) - 0.05), 1.1)
        a2.set_ylabel("cos(class weight, class mean feature)")
        a2.set_title(f"{bb}: weights vs class centres (end of training)")
        a2.legend(fontsize=8, loc="upper left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summarise(backbone: str, head: str, loss: str, seeds: list[int], per_seed: list[dict]) -> dict:
    curves = np.array([s["loss_curve"] for s in per_seed])
    std = curves.std(0)
    accs = [s["accuracy"] for s in per_seed]
    return {"backbone": backbone, "head": head, "loss": loss, "seeds": seeds,
            "head_module": type(make_net(backbone, head, loss, 0).head).__name__,
            "accuracy_mean": float(np.mean(accs)), "accuracy_std": float(np.std(accs)),
            "cos_mean": float(np.mean([s["cos_mean"] for s in per_seed])),
            "cos_min": float(np.mean([s["cos_min"] for s in per_seed])),
            "loss_curves": curves.tolist(), "loss_mean_per_epoch": curves.mean(0).tolist(),
            "loss_std_per_epoch": std.tolist(), "loss_spread": float(std.mean()),
            "loss_relative_spread": float((std / curves.mean(0)).mean()),
            "per_seed": per_seed}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="build/symmetric_head")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = 2, 2
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    xtr, ytr, xte, yte = mnist5k()
    if args.quick:
        xtr, ytr = xtr[::4], ytr[::4]
    seeds = list(range(args.seeds))

    runs = []
    for backbone in BACKBONES:
        for head, loss in CONFIGS:
            per_seed = []
            for seed in seeds:
                net = make_net(backbone, head, loss, seed)
                curve = train_run(net, loss, xtr, ytr, args.epochs, seed)
                with torch.no_grad():
                    acc = float((net.head(features(net, xte)).argmax(1).numpy() == yte).mean())
                    cos = class_centre_cosines(features(net, xtr), ytr, net.head.weight)
                per_seed.append({"seed": seed, "accuracy": acc, "loss_curve": curve,
                                 "cos_per_class": [round(float(c), 5) for c in cos],
                                 "cos_mean": float(np.mean(cos)), "cos_min": float(np.min(cos))})
                print(f"{backbone} {head}/{loss} seed {seed}: acc {acc:.4f} cos mean {np.mean(cos):.3f} "
                      f"min {np.min(cos):.3f} loss {curve[0]:.3f} -> {curve[-1]:.3f}  [{time.time() - t0:.0f} s]",
                      file=sys.stderr, flush=True)
            runs.append(summarise(backbone, head, loss, seeds, per_seed))

    header = (f"{'backbone':<9}{'head/loss':<21}{'acc mean':>9}{'acc std':>9}{'cos mean':>10}{'cos min':>9}"
              f"{'loss spread':>13}{'relative':>10}{'final loss':>12}")
    lines = [header] + [f"{r['backbone']:<9}{r['head'] + '/' + r['loss']:<21}{r['accuracy_mean']:>9.4f}"
                        f"{r['accuracy_std']:>9.4f}{r['cos_mean']:>10.4f}{r['cos_min']:>9.4f}"
                        f"{r['loss_spread']:>13.4f}{r['loss_relative_spread']:>10.4f}"
                        f"{r['loss_mean_per_epoch'][-1]:>12.4f}" for r in runs]
    print("\n".join(lines))
    results = {"paper": "Kansizoglou, Bampis, Gasteratos, Do Neural Network Weights Account for Classes "
                        "Centers?, IEEE TNNLS 2022",
               "command": "python examples/symmetric_head.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "quick": args.quick, "epochs": args.epochs, "seeds": seeds, "scale": SCALE, "arc_margin": MARGIN,
               "backbones": {k: ("784-d ReLU6 features" if v is None else f"784-d ReLU6 features + Linear(784, {v})")
                             for k, v in BACKBONES.items()},
               "train_images": int(len(xtr)), "test_images": int(len(xte)),
               "cos_definition": "cos(w_c, mean training feature of class c), end of training; cos_mean / cos_min "
                                 "= mean / min over the classes, averaged over seeds",
               "loss_spread_definition": "std across seeds of the epoch-mean training loss, averaged over epochs; "
                                         "relative: std / mean, averaged over epochs",
               "table": lines, "runs": runs, "seconds": round(time.time() - t0, 1)}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(out / "symmetric_head.png", runs)
    print(f"wrote {out / 'results.json'}, {out / 'symmetric_head.png'} ({results['seconds']} s)", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
