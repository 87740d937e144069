"""Storage formats of sub-byte tensors: binary activations and weights packed 32 channels per word."""
