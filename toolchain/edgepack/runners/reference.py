"""Target ``reference``: the numpy integer executor over the model's integer graph."""

import numpy as np

from ..reference.executor import run_int


def run_raw(model, xq: np.ndarray) -> np.ndarray:
    return run_int(model.graph, xq)
