"""Reference architectures in plain PyTorch for tests (torchvision's PyPI wheel does not load with the CPU torch).

Each module exposes ``make(seed=0) -> (nn.Module in eval mode, input shape)``: seeded random weights, batchnorm
running statistics and affine parameters randomised (so folding is not the identity), and a 64x64 or 96x96
input. ``MODELS`` names them for harnesses (tests/test_zoo_a.py; the shared zoo harness imports them too).
"""

from . import efficientnet_b0, ghostnet, mnasnet, mobilenetv3_small, squeezenet11

MODELS = {
    "mobilenetv3_small": mobilenetv3_small,
    "efficientnet_b0": efficientnet_b0,
    "squeezenet11": squeezenet11,
    "mnasnet": mnasnet,
    "ghostnet": ghostnet,
}
