"""edgepack: compress a PyTorch or ONNX model and run it bit-exactly on microcontrollers and the Pi."""

__version__ = "0.1.0"
