"""Exponential vs linear post-training weight discretization on MNIST-5k: does exponential need 1-2 fewer bits?

    python examples/expdisc_sweep.py [--out build/expdisc] [--epochs 4] [--deep-epochs 5] [--seed 0] [--seeds 1]

Paper: Malsagov, Khayrov, Pushkareva, Karandashev, "Exponential discretization of weights of neural network
connections in pre-trained neural networks" (2019/2020): each weight becomes sign * s * q^k with b bits, the
base q (0 < q < 1) chosen with the bit count; claimed: the same accuracy as linear (uniform) discretization
with 1-2 fewer bits.

Trains (seeded, a few epochs on 2 cores) two nets on the 4,000 MNIST-5k training digits: (a) ResidualCNN from
mnist_common (the model of examples/mnist_cnn.py, 5 weighted layers), (b) DeepResNet below (3 stages x 2
residual blocks, BN, 9 convs, global average pooling, linear). Then for b = 2..6 every Conv2d / Linear weight
except the first and the last is discretized and the accuracy measured on the 1,000 test digits, two ways:

float activations (edgepack.compress.expdisc.discretize_model, float inference):

    exp/ch      exponential, tuned base: q and s per channel, least squared weight error (grid over q, scale
                search, Lloyd steps on s)
    pow2/ch     exponential with q = 1/2 (powers of two), per-channel scale searched the same way
    lin/ch      linear (symmetric uniform, 2^(b-1)-1 levels each side), per-channel, clip range searched
    exp/layer, lin/layer    one base / scale / clip range per layer

int8 activations as built (`edgepack build`'s quantizer, run on the integer reference, which is bit-exact
with the host and every emulated board; 200 training digits for calibration):

    exp int8    --weights expN: tuned base, integer codebook (round(q^k 2^P)), per-channel scales
    pow2 int8   --weights pow2-N (N <= 6): powers of two, shift-and-add kernels
    lin int8    the linear per-channel levels of lin/ch put into the float model, then an int8 build (the
                int8 grid, 127 steps per channel, holds the b-bit levels up to 1/254 of the channel's range)

It prints a table (accuracy and, for float activations, the relative squared weight error), the smallest b at
which each variant is within 1 point of float, a plain verdict on the paper's claim for both activation
kinds, and writes expdisc.png and results.json to --out. With --seeds N it trains N seeds (seed, seed+1, ...)
of each net and reports the means (N times the runtime): on one seed, differences of about a point at b = 3
are within the noise of 1,000 test digits and of training.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_common import ResidualCNN, accuracy, float_logits, mnist5k, train  # noqa: E402

from edgepack.build import layer_formats  # noqa: E402
from edgepack.compress.expdisc import discretize_model  # noqa: E402
from edgepack.compress.quantize import quantize  # noqa: E402
from edgepack.frontend import load_model  # noqa: E402
from edgepack.reference.executor import run_int  # noqa: E402

BITS = [2, 3, 4, 5, 6]
VARIANTS = {  # float activations: name -> (method, per_channel)
    "exp/ch": ("exp", True),
    "pow2/ch": ("pow2", True),
    "lin/ch": ("linear", True),
    "exp/layer": ("exp", False),
    "lin/layer": ("linear", False),
}
INT8_VARIANTS = ("exp int8", "pow2 int8", "lin int8")  # int8 activations, integer reference


class Block(nn.Module):
    """relu(shortcut(x) + BN(conv3x3(x))); the shortcut is a 1x1 conv + BN where the shape changes."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.short = (nn.Identity() if cin == cout and stride == 1 else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x):
        return torch.relu(self.short(x) + self.body(x))


class DeepResNet(nn.Module):
    """Stem conv-BN-ReLU + maxpool (16x14x14), stages of 2 blocks at 16, 32 (stride 2), 64 (stride 2) channels,
    global average pooling, linear: 7 3x3 convs + 2 1x1 projections + 1 linear, about 73k weights."""

    def __init__(self, widths=(16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(2))
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [Block(c, w, 1 if i == 0 else 2), Block(w, w, 1)]
            c = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(x.mean(dim=(2, 3)))


def fold_bn(model):
    """Copy of an eval-mode model with every BatchNorm2d that directly follows a Conv2d inside an
    nn.Sequential folded into that conv (weight * gamma / sqrt(var + eps), bias added) and made Identity."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                k = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
                new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                conv.dilation, conv.groups, bias=True)
                with torch.no_grad():
                    new.weight.copy_(conv.weight * k.view(-1, 1, 1, 1))
                    b0 = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                    new.bias.copy_((b0 - bn.running_mean) * k + bn.bias)
                seq._modules[a], seq._modules[b] = new, nn.Identity()
    return model


@torch.no_grad()
def weight_error(ref, q):
    """sum ||w - q(w)||^2 / sum ||w||^2 over the Conv2d / Linear weights that changed."""
    num = den = 0.0
    for (_, m0), (_, m1) in zip(ref.named_modules(), q.named_modules()):
        if isinstance(m0, (nn.Conv2d, nn.Linear)) and not torch.equal(m0.weight, m1.weight):
            num += float(((m0.weight - m1.weight) ** 2).sum())
            den += float((m0.weight ** 2).sum())
    return num / den if den else 0.0


def int8_accuracy(model, weights, xcal, xte, yte, example):
    """Accuracy of ``model`` built with ``--weights weights`` (first and last layer int8) on the integer
    reference: export (.pt2), edgepack's frontend and quantizer, the numpy integer executor."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.pt2"
        torch.export.save(torch.export.export(model.eval(), (example,)), path)
        g = load_model(path)
    q = quantize(g, xcal, per_channel=True, weight_formats=layer_formats(g, weights, {}))
    iq = q.tensors[q.inputs[0]].quant
    xq = np.clip(np.round(xte.transpose(0, 2, 3, 1) / iq.scale) + iq.zero_point, -128, 127).astype(np.int8)
    raw = run_int(q, xq)
    return float((raw.reshape(len(yte), -1).argmax(1) == yte).mean())


def sweep(model, xcal, xte, yte, example):
    res = {"float": accuracy(float_logits(model, xte), yte)}
    folded = fold_bn(model)
    folded_acc = accuracy(float_logits(folded, xte), yte)
    assert abs(folded_acc - res["float"]) < 0.0015, (folded_acc, res["float"])  # folding is exact up to fp
    res["int8"] = int8_accuracy(model, "int8", xcal, xte, yte, example)
    for name, (method, per_channel) in VARIANTS.items():
        for b in BITS:
            q = discretize_model(model, b, method=method, per_channel=per_channel, example_input=example)
            res[(name, b)] = (accuracy(float_logits(q, xte), yte), weight_error(model, q))
            if name == "lin/ch":  # linear levels in the float model, then an int8 build
                res[("lin int8", b)] = (int8_accuracy(q, "int8", xcal, xte, yte, example), None)
    for b in BITS:
        res[("exp int8", b)] = (int8_accuracy(model, f"exp{b}", xcal, xte, yte, example), None)
        res[("pow2 int8", b)] = (int8_accuracy(model, f"pow2-{b}", xcal, xte, yte, example), None)
    return res


def smallest_ok(res, name, tol=0.01):
    """Smallest b within ``tol`` of the unquantized-weight reference: float for float activations, the int8
    build for int8 activations."""
    ref = res["int8"] if name in INT8_VARIANTS else res["float"]
    for b in BITS:
        if res[(name, b)][0] >= ref - tol:
            return b
    return None


def _mean(runs, k):
    if not isinstance(runs[0][k], tuple):
        return float(np.mean([r[k] for r in runs]))
    acc = float(np.mean([r[k][0] for r in runs]))
    err = None if runs[0][k][1] is None else float(np.mean([r[k][1] for r in runs]))
    return acc, err


def verdict(res, exp, lin):
    be, bl = smallest_ok(res, exp), smallest_ok(res, lin)
    if be is None and bl is None:
        return None, "neither method within 1 point at b <= 6"
    if be is None or bl is None:  # counting "never within 6 bits" as 7
        saved = (bl or 7) - (be or 7)
        return saved, (f"exp {be or 'never (b<=6)'}, linear {bl or 'never (b<=6)'} -> exp saves "
                       f"{'>=' if bl is None else '<='}{saved} bit(s)")
    return bl - be, f"exp {be} bits, linear {bl} bits -> exp saves {bl - be} bit(s)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build/expdisc")
    ap.add_argument("--epochs", type=int, default=4, help="epochs for ResidualCNN")
    ap.add_argument("--deep-epochs", type=int, default=5, help="epochs for DeepResNet")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1, help="number of training seeds to average")
    a = ap.parse_args()
    t0 = time.time()
    torch.set_num_threads(2)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xte, yte = mnist5k()
    xcal = xtr[::20]  # 200 training digits, 20 per class (as examples/mnist_cnn.py)
    example = torch.from_numpy(xte[:1])

    nets = {}
    for label, ctor, epochs in (("ResidualCNN", ResidualCNN, a.epochs), ("DeepResNet", DeepResNet, a.deep_epochs)):
        runs = []
        for seed in range(a.seed, a.seed + a.seeds):
            torch.manual_seed(seed)
            t = time.time()
            model = train(ctor(), xtr, ytr, epochs=epochs, seed=seed, progress=False)
            nparam = sum(p.numel() for p in model.parameters())
            print(f"{label} seed {seed}: {nparam} parameters, trained {epochs} epochs in {time.time() - t:.1f} s",
                  flush=True)
            t = time.time()
            runs.append(sweep(model, xcal, xte, yte, example))
            print(f"{label} seed {seed}: float test accuracy {runs[-1]['float']:.3f}, int8 build "
                  f"{runs[-1]['int8']:.3f}; sweep in {time.time() - t:.1f} s", flush=True)
        nets[label] = {k: _mean(runs, k) for k in runs[0]}

    noise = 100 * np.sqrt(0.97 * 0.03 / len(yte))
    seeds = f"seed {a.seed}" if a.seeds == 1 else f"mean over seeds {a.seed}..{a.seed + a.seeds - 1}"
    print(f"\nTest accuracy % on 1,000 MNIST-5k digits ({seeds}); first and last layer not discretized (float, or "
          "int8 in the builds).")
    print("In brackets (float activations): relative squared weight error of the discretized layers, "
          "sum|w-q|^2 / sum|w|^2.")
    print(f"(One test image is 0.1 point; the standard error of an accuracy near 97% is about {noise:.1f} point.)")
    names = list(VARIANTS) + list(INT8_VARIANTS)
    for label, res in nets.items():
        print(f"\n{label}   float {100 * res['float']:.1f}, int8 build {100 * res['int8']:.1f}")
        print(f"{'variant':<12}" + "".join(f"{'b=' + str(b):>16}" for b in BITS) + f"{'b within 1pt':>14}")
        for name in names:
            cells = "".join(f"{100 * res[(name, b)][0]:>8.1f} " + (f"({res[(name, b)][1]:.4f})"
                                                                  if res[(name, b)][1] is not None else " " * 8)
                            for b in BITS)
            ok = smallest_ok(res, name)
            print(f"{name:<12}{cells}{(str(ok) if ok else '>6'):>14}")

    print("\nVerdict (paper: exponential reaches the same accuracy with 1-2 fewer bits than linear); 'within 1 point'"
          " of float for float activations, of the int8 build for int8 activations:")
    verdicts = {}
    for label, res in nets.items():
        for kind, exp, lin in (("float act., per channel", "exp/ch", "lin/ch"),
                               ("float act., per layer", "exp/layer", "lin/layer"),
                               ("int8 act., as built", "exp int8", "lin int8"),
                               ("float act., powers of two", "pow2/ch", "lin/ch"),
                               ("int8 act., powers of two", "pow2 int8", "lin int8")):
            saved, txt = verdict(res, exp, lin)
            verdicts[(label, kind)] = saved
            print(f"  {label:<12} {kind:<27} smallest b within 1 point: {txt}")
    summary = []
    for kind in ("float act., per channel", "int8 act., as built"):
        s = [verdicts[(label, kind)] for label in nets]
        head = f"tuned base, {kind}:"
        if all(v is not None and v >= 1 for v in s):
            summary.append(f"{head} the claim HOLDS here (exponential saves {s} bit(s) on the two nets)")
        elif all(v is not None and v <= 0 for v in s):
            summary.append(f"{head} the claim DOES NOT HOLD here (bits saved per net: {s})")
        else:
            summary.append(f"{head} mixed (bits saved per net: {s})")
        print("  => " + summary[-1] + ".")
    s = [verdicts[(label, "float act., powers of two")] for label in nets]
    print(f"  => powers of two (q = 1/2), float act.: bits saved against linear per net {s}: with levels a factor 2 "
          "apart the weight error plateaus from b = 4 on (extra bits only add levels near 0).")
    for label, res in nets.items():
        e = ", ".join(f"{res[('exp/ch', b)][1]:.4f}" for b in BITS[1:])
        p2 = ", ".join(f"{res[('pow2/ch', b)][1]:.4f}" for b in BITS[1:])
        li = ", ".join(f"{res[('lin/ch', b)][1]:.4f}" for b in BITS[1:])
        print(f"  {label}: relative weight error at b = 3..6: exp/ch {e}; pow2/ch {p2}; lin/ch {li}.")
    if a.seeds == 1:
        print("  Caution: one training seed; differences of about a point at b = 3 are within the noise. Use --seeds 3.")

    # plot
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True)
    styles = {"exp/ch": ("C0", "-", "o"), "pow2/ch": ("C2", "-", "^"), "lin/ch": ("C1", "-", "s"),
              "exp int8": ("C0", "--", "o"), "pow2 int8": ("C2", "--", "^"), "lin int8": ("C1", "--", "s")}
    for col, (label, res) in enumerate(nets.items()):
        for row in (0, 1):
            ax = axes[row, col]
            for name, (c, ls, mk) in styles.items():
                ax.plot(BITS, [100 * res[(name, b)][0] for b in BITS], color=c, ls=ls, marker=mk, label=name)
            ax.axhline(100 * res["float"], color="k", lw=0.8, label="float")
            ax.axhline(100 * res["int8"], color="k", lw=0.8, ls="--", label="int8 build")
            ax.axhline(100 * res["float"] - 1, color="k", lw=0.8, ls=":", label="float - 1")
            ax.set_xticks(BITS)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{label} (MNIST-5k, 1,000 test digits, {seeds})", fontsize=10)
                ax.set_ylim(max(0, min(100 * res[(n, 2)][0] for n in styles) - 5), 100)
            else:
                ax.set_title("zoom on b >= 3", fontsize=9)
                ax.set_ylim(100 * res["float"] - 5, min(100, 100 * res["float"] + 1.5))
                ax.set_xlabel("bits per weight")
            if col == 0:
                ax.set_ylabel("test accuracy %")
    axes[1, 1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Exponential (tuned base, powers of two) vs linear post-training weight discretization\n"
                 "solid: float activations; dashed: int8 activations as built (integer reference)")
    fig.text(0.5, 0.005, "Verdict (1-2 bits fewer than linear?): " + "; ".join(summary), ha="center", va="bottom",
             fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out / "expdisc.png", dpi=120)
    js = {label: {"float": res["float"], "int8": res["int8"],
                  **{name: {str(b): {"accuracy": res[(name, b)][0], "weight_rel_sq_error": res[(name, b)][1]}
                            for b in BITS} for name in names}} for label, res in nets.items()}
    js["verdict_bits_saved"] = {f"{label} / {kind}": v for (label, kind), v in verdicts.items()}
    (out / "results.json").write_text(json.dumps(js, indent=1))
    print(f"\nwrote {out / 'expdisc.png'} and {out / 'results.json'}; total {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
