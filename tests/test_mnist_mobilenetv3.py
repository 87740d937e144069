"""Real data: a MobileNetV3-style net (HardSwish, squeeze-excite with a hardsigmoid gate, inverted residuals) trained
here on MNIST-5k, exported with torch.export, built for cortex-m7 and run on its emulator over the 1,000 test images:
int8 accuracy within one point of float, and reference == host == emulator on every output."""

import numpy as np
import torch
from torch import nn

from edgepack.build import build
from mnist_common import accuracy, float_logits, mnist5k, train
from toolchains import require_board_tools
from zoo.common import InvertedResidual, conv_bn


def Block(cin, exp, cout, k, stride, act):  # noqa: N802
    """MobileNetV3's bneck: expand 1x1, depthwise kxk, squeeze-excite (hardsigmoid gate), project 1x1."""
    return InvertedResidual(cin, exp, cout, k, stride, act, se=max(4, exp // 4))


class MobileNetV3Mnist(nn.Module):
    """28x28x1 -> 10: HardSwish stem (stride 2), a ReLU block and two HardSwish blocks (one strided), a 1x1
    HardSwish conv, global average pool, linear. About 12k parameters, 0.3 M MACs."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 8, 3, 2, act=nn.Hardswish),
            Block(8, 8, 8, 3, 1, nn.ReLU),
            Block(8, 32, 16, 3, 2, nn.Hardswish),
            Block(16, 48, 16, 3, 1, nn.Hardswish),
            conv_bn(16, 64, act=nn.Hardswish))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def test_mobilenetv3_style_mnist_on_cortex_m7(tmp_path):
    require_board_tools("cortex-m7")
    torch.set_num_threads(1)  # small ops: one thread is faster than two contending ones on a 2-core runner
    xtr, ytr, xte, yte = mnist5k()
    torch.manual_seed(0)
    model = train(MobileNetV3Mnist(), xtr, ytr, epochs=4, batch=128, lr=2e-2, progress=False)
    torch.export.save(torch.export.export(model, (torch.from_numpy(xte[:1]),)), tmp_path / "net.pt2")
    np.save(tmp_path / "calib.npy", xtr[::20])
    np.savez(tmp_path / "test.npz", x=xte, y=yte)
    report = build(tmp_path / "net.pt2", "cortex-m7", tmp_path / "out", calib=tmp_path / "calib.npy",
                   eval_data=tmp_path / "test.npz")
    m = report["measured"]
    acc_f = accuracy(float_logits(model, xte), yte)
    print(f"\nMobileNetV3-style MNIST: float {acc_f:.4f} (build: {m['float_accuracy']:.4f}), int8 "
          f"{m['built_accuracy']:.4f} on {m['built_accuracy_measured_on']}, {m['instructions_per_inference']:.0f} "
          f"instructions per inference, flash {report['flash_bytes']} B, arena {report['arena_bytes']} B (bound "
          f"{report['liveness_bound_bytes']}); {m['bit_exact']}")
    assert m["eval_images"] == 1000 and m["built_accuracy_measured_on"].startswith("emulator")
    assert m["bit_exact"].endswith(": True") and "emulator" in m["bit_exact"]
    assert abs(m["float_accuracy"] - acc_f) < 1e-9
    assert acc_f > 0.9
    assert abs(m["built_accuracy"] - acc_f) <= 0.01
    ops = [l["op"] for l in report["layers"]]
    assert {"lut_s8", "mul_s8", "add_s8"} <= set(ops)
    assert report["arena_bytes"] == report["liveness_bound_bytes"]
