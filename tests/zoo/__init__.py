"""Reference architectures in plain PyTorch for tests (torchvision's PyPI wheel does not load with the CPU torch).

Each module exposes ``make(seed=0) -> (nn.Module in eval mode, input shape)``: seeded random weights, batchnorm
running statistics and affine parameters randomised (so folding is not the identity), a 64x64 input (the KWS net:
40 MFCCs x 49 frames; the RNN: 20 frames of 8 features). The ImageNet architectures also take ``full=True``, the
paper's network; their docstrings say how the test configuration is reduced from it. ``MODELS`` names all of them
for the harnesses (tests/test_zoo.py, benchmarks/zoo.py; the shared code is zoo/harness.py).
"""

from . import (autoencoder, efficientnet_b0, ghostnet, kws_ds1d, mnasnet, mobilenetv3_small, regnetx, rnn_tiny,
               shufflenetv2, squeezenet11, unet)

MODELS = {
    "mobilenetv3_small": mobilenetv3_small,
    "efficientnet_b0": efficientnet_b0,
    "squeezenet11": squeezenet11,
    "shufflenetv2": shufflenetv2,
    "ghostnet": ghostnet,
    "regnetx": regnetx,
    "mnasnet": mnasnet,
    "kws_ds1d": kws_ds1d,
    "autoencoder": autoencoder,
    "unet": unet,
    "rnn_tiny": rnn_tiny,
}
