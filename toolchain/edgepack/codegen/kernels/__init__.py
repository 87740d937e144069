"""Kernel templates, one module per op of the integer dialect (reference/ops.py, the binary ops of
reference/ops_binary.py and the exponent-code ops of reference/ops_exp.py, the sparse-weight ops of reference/ops_sparse.py); "reshape" has no kernel.

Each module has PARAMS (argument names in order: the op's inputs in the reference function's positional
order, then "y"), CONST (the read-only ones) and ``template(attrs, shapes) -> PrimFunc``: the plain kernels,
for every board. The kernels of board features (conv2d_s8_smlad, dense_s8_smlad, dwconv2d_s8_fold,
avgpool_s8_sxtab16, with the micro-kernels of intrin_dsp.py) are chosen by codegen/schedules.py and add
``lower``, ``scratch_bytes`` and usually ``schedule`` to that interface.
"""

from . import (add_s8, avgpool_s8, bconv2d_b1, bconv2d_b1_s8, binarize_s8, clamp_s8, conv2d_exp, conv2d_s8,
               conv2d_s8_bitmask, conv2d_s8_csr, dense_exp, dense_s8, dense_s8_bitmask, dense_s8_csr, dwconv2d_exp,
               dwconv2d_s8, maxpool_s8, softmax_s8)

KERNELS = {
    "conv2d_s8": conv2d_s8,
    "dwconv2d_s8": dwconv2d_s8,
    "dense_s8": dense_s8,
    "maxpool_s8": maxpool_s8,
    "avgpool_s8": avgpool_s8,
    "add_s8": add_s8,
    "clamp_s8": clamp_s8,
    "softmax_s8": softmax_s8,
    "binarize_s8": binarize_s8,
    "bconv2d_b1": bconv2d_b1,
    "bconv2d_b1_s8": bconv2d_b1_s8,
    "conv2d_exp": conv2d_exp,
    "dwconv2d_exp": dwconv2d_exp,
    "dense_exp": dense_exp,
    "conv2d_s8_csr": conv2d_s8_csr,
    "dense_s8_csr": dense_s8_csr,
    "conv2d_s8_bitmask": conv2d_s8_bitmask,
    "dense_s8_bitmask": dense_s8_bitmask,
}
