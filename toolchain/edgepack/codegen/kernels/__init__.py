"""Kernel templates, one module per op of the integer dialect (reference/ops.py, the binary ops of
reference/ops_binary.py and the exponent-code ops of reference/ops_exp.py, the sparse-weight ops of reference/ops_sparse.py, the layout / resize / transposed-convolution
ops of reference/ops_spatial.py, the RNNs of reference/ops_rnn.py); "reshape" has no kernel.

Each module has PARAMS (argument names in order: the op's inputs in the reference function's positional
order, then "y"), CONST (the read-only ones) and ``template(attrs, shapes) -> PrimFunc``: the plain kernels,
for every board. A kernel with a variable number of inputs (add_s8, concat_s8) has ``params(n_inputs)`` instead:
x0 .. x{n-1}, y, all inputs read-only. Templates of the ops in codegen.memplan.STRIDED_OPS read strided views
from attrs["layout"]. The kernels of board features (conv2d_s8_smlad, dense_s8_smlad, dwconv2d_s8_fold,
avgpool_s8_sxtab16, with the micro-kernels of intrin_dsp.py) are chosen by codegen/schedules.py and add
``lower``, ``scratch_bytes`` and usually ``schedule`` to that interface (they take no strided views).
"""

from . import (add_s8, avgpool_s8, bconv2d_b1, bconv2d_b1_s8, binarize_s8, clamp_s8, concat_s8, conv2d_exp,
               conv2d_expcb, dense_expcb, dwconv2d_expcb, conv2d_s8, conv2d_s8_bitmask, conv2d_s8_csr, dense_exp, dense_s8, dense_s8_bitmask, dense_s8_csr,
               dwconv2d_exp, dwconv2d_s8, lut_s8, maxpool_s8, mul_s8, pad_s8, prelu_s8, slice_s8, softmax_s8)

KERNELS = {
    "conv2d_s8": conv2d_s8,
    "dwconv2d_s8": dwconv2d_s8,
    "dense_s8": dense_s8,
    "maxpool_s8": maxpool_s8,
    "avgpool_s8": avgpool_s8,
    "add_s8": add_s8,
    "mul_s8": mul_s8,
    "lut_s8": lut_s8,
    "prelu_s8": prelu_s8,
    "concat_s8": concat_s8,
    "slice_s8": slice_s8,
    "pad_s8": pad_s8,
    "clamp_s8": clamp_s8,
    "softmax_s8": softmax_s8,
    "binarize_s8": binarize_s8,
    "bconv2d_b1": bconv2d_b1,
    "bconv2d_b1_s8": bconv2d_b1_s8,
    "conv2d_exp": conv2d_exp,
    "dwconv2d_exp": dwconv2d_exp,
    "dense_exp": dense_exp,
    "conv2d_expcb": conv2d_expcb,
    "dwconv2d_expcb": dwconv2d_expcb,
    "dense_expcb": dense_expcb,
    "conv2d_s8_csr": conv2d_s8_csr,
    "dense_s8_csr": dense_s8_csr,
    "conv2d_s8_bitmask": conv2d_s8_bitmask,
    "dense_s8_bitmask": dense_s8_bitmask,
}

from . import (conv_transpose2d_s8, gru_s8, lstm_s8, resize_bilinear_s8, resize_nearest_s8,  # noqa: E402
               transpose_s8)

KERNELS.update({"transpose_s8": transpose_s8, "resize_nearest_s8": resize_nearest_s8,
                "resize_bilinear_s8": resize_bilinear_s8, "conv_transpose2d_s8": conv_transpose2d_s8,
                "lstm_s8": lstm_s8, "gru_s8": gru_s8})


def param_names(mod, n_inputs: int) -> list:
    """The kernel's parameter names for a layer with ``n_inputs`` inputs."""
    return mod.params(n_inputs) if hasattr(mod, "params") else list(mod.PARAMS)


def const_params(mod, names) -> set:
    """Positions of the read-only parameters."""
    const = set(names[:-1]) if hasattr(mod, "params") else mod.CONST
    return {i for i, p in enumerate(names) if p in const}
