"""Issue 16: a binary layer fed by a ReLU gets an informative input (learned per-channel threshold, RSign), the
warning names the layer when that fix is off, the threshold exports as an exact integer threshold, and a
binarized conv-BN-ReLU residual net runs bit for bit on host and the cortex-m7 emulator."""

import inspect
import json
import warnings

import numpy as np
import pytest
import torch

from binary_resnet import ResNet, sign_plus_fraction
from edgepack.build import build
from edgepack.compress.binarize_recu import (BinaryConv2d, DeadBinaryInputWarning, binarize, export_ready,
                                             init_thresholds, train_binary)
from edgepack.runners import run
from mnist_common import mnist5k
from toolchains import require_board_tools

BINARY = ["blocks.0.conv1", "blocks.0.conv2", "blocks.0.short.0", "blocks.1.conv1", "blocks.1.conv2",
          "blocks.1.short.0", "blocks.2.conv1", "blocks.2.conv2"]
EX = torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="module")
def mnist():
    xtr, ytr, xte, yte = mnist5k()
    rng = np.random.default_rng(0)
    tr = rng.permutation(len(xtr))[:600]
    return xtr[tr], ytr[tr], xte[::10], yte[::10]


def test_defaults_are_the_measured_recipe():
    """binarize()'s defaults are the recipe examples/binary_resnet.py measured best (its recipe row passes
    no options), and examples/mnist_binary.py uses them too."""
    import binary_resnet
    import mnist_binary

    d = {k: p.default for k, p in inspect.signature(binarize).parameters.items()}
    assert {k: d[k] for k in ("method", "quantile", "act_grad", "scale", "act_norm", "act_threshold",
                              "standardize", "clamp", "rprelu")} == binary_resnet.RECIPE
    assert binary_resnet.ROWS[binary_resnet.RECIPE_ROW][1] == {}
    assert mnist_binary.DEFAULT_RECU == {k: d[k] for k in mnist_binary.DEFAULT_RECU}


def test_relu_fed_binary_layer_never_sees_a_constant_input(mnist):
    xtr, ytr, xte, _ = mnist
    torch.manual_seed(0)
    with pytest.warns(DeadBinaryInputWarning):
        plain, names = binarize(ResNet(8), act_threshold="none", example_input=EX)
    assert names == BINARY
    dead = sign_plus_fraction(plain, xte)
    # the problem: every binary conv of this net reads a ReLU, so plain sign(x) is +1 everywhere
    assert all(dead[n] == 1.0 for n in BINARY), dead

    torch.manual_seed(0)
    m, _ = binarize(ResNet(8), example_input=EX)
    assert init_thresholds(m, torch.from_numpy(xtr[:256])) == BINARY  # from the input statistics
    for n in BINARY:
        layer = m.get_submodule(n)
        assert bool(layer.act_bias_ready) and (layer.act_bias > 0).any()
    for when in ("initialised", "trained"):
        fr = sign_plus_fraction(m, xte)  # held-out real data
        assert all(0.02 < fr[n] < 0.98 for n in BINARY), (when, fr)
        if when == "initialised":
            train_binary(m, xtr, ytr, epochs=1, batch=64, progress=False)


def test_warning_names_the_layer_when_the_fix_is_off():
    with pytest.warns(DeadBinaryInputWarning) as rec:
        binarize(ResNet(8), act_threshold="none", example_input=EX)
    text = [str(w.message) for w in rec if issubclass(w.category, DeadBinaryInputWarning)]
    assert len(text) == len(BINARY)
    for n, t in zip(BINARY, text):
        assert f"layer '{n}'" in t and "never negative" in t
    assert "blocks.0.conv1" in text[0] and "stem.2 (ReLU)" in text[0]
    # the fix on (default), or a signed input (no ReLU before the layer): no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeadBinaryInputWarning)
        binarize(ResNet(8), example_input=EX)

        class Signed(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.b = torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 4, 3)
                self.c, self.fc = torch.nn.Conv2d(4, 4, 3), torch.nn.Linear(4, 2)

            def forward(self, x):
                x = torch.nn.functional.hardtanh(self.c(torch.tanh(self.b(self.a(x)))))
                return self.fc(x.mean((2, 3)))

        _, names = binarize(Signed(), act_threshold="none", example_input=torch.zeros(1, 1, 12, 12))
        assert names == ["b", "c"]


def _trained_ish(width=8, seed=0):
    """A binarized ResNet with non-trivial thresholds, BN statistics and scales (random, as after training)."""
    torch.manual_seed(seed)
    m, _ = binarize(ResNet(width), example_input=EX)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.3, 0.3, generator=g)
                mod.running_var.uniform_(0.5, 2.0, generator=g)
                mod.weight.uniform_(0.5, 1.5, generator=g)
                mod.bias.uniform_(-0.5, 0.5, generator=g)
            if isinstance(mod, BinaryConv2d):
                mod.act_bias.uniform_(0.0, 0.6, generator=g)
                mod.act_bias_ready.fill_(True)
    return m.eval()


def test_thresholds_export_exactly(tmp_path, mnist):
    """export_ready() writes sign(x - b) as sign(x + shift); the importer folds ReLU + threshold into one
    integer threshold per channel (the ReLU disappears) and the built model agrees with PyTorch."""
    xtr, _, xte, _ = mnist
    m = _trained_ish()
    dep = export_ready(m)
    with torch.no_grad():
        ref_logits = m(torch.from_numpy(xte)).numpy()
        dep_logits = dep(torch.from_numpy(xte)).numpy()
    assert np.allclose(ref_logits, dep_logits, atol=1e-4)  # inputs exactly at a threshold have measure zero
    p = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(dep, (EX,)), p)
    np.save(tmp_path / "calib.npy", xtr[:64])
    rep = build(p, "host", tmp_path / "out", calib=tmp_path / "calib.npy", weights="binary")
    ops = [lay["op"] for lay in rep["layers"]]
    assert "relu" not in ops  # the ReLUs in front of the thresholds are gone
    # one per sign (each with its own thresholds): block 0's conv1 and shortcut read the stem, block 1's read
    # block 0's sum, block 2's conv1 reads block 1's sum; conv1 -> conv2 inside a block passes bits
    assert ops.count("binarize_s8") == 5 and ops.count("bconv2d_b1") == 3
    card = json.loads((tmp_path / "out" / "quantization_card.json").read_text())
    bins = [lay for lay in card["layers"] if lay["op"] == "binarize_s8"]
    assert len(bins) == 5 and all(lay["sign_threshold"] == "per-channel (learned)" and lay["output_bits"] == 1
                                  for lay in bins)
    y_ref, raw_ref = run(tmp_path / "out", xte[:40], on="reference")
    y_host, raw_host = run(tmp_path / "out", xte[:40], on="host")
    assert np.array_equal(raw_ref, raw_host)
    assert (y_ref.argmax(1) == dep_logits[:40].argmax(1)).mean() >= 0.9


def test_binarized_resnet_bit_exact_on_cortex_m7(tmp_path, mnist):
    require_board_tools("cortex-m7")
    xtr, _, xte, _ = mnist
    dep = export_ready(_trained_ish(seed=1))
    p = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(dep, (EX,)), p)
    np.save(tmp_path / "calib.npy", xtr[:32])
    build(p, "cortex-m7", tmp_path / "out", calib=tmp_path / "calib.npy", weights="binary")
    _, raw_emu = run(tmp_path / "out", xte[:4], on="emulator")
    _, raw_host = run(tmp_path / "out", xte[:4], on="host")
    _, raw_ref = run(tmp_path / "out", xte[:4], on="reference")
    assert np.array_equal(raw_emu, raw_host) and np.array_equal(raw_host, raw_ref)
