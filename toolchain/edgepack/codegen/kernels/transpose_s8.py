"""ep_transpose_s8: y = x.reshape(shape).transpose(perm), an int8 copy in the output's memory order.

``shape`` / ``perm`` (batch first, axis 0 fixed) come from the quantizer with the axes that move together
merged, so a channel shuffle of an (H, W, C) tensor is (H*W, g, C/g) -> (H*W, C/g, g). The loop nest is padded
to six levels of which TVM drops those of extent 1; the innermost loop walks the output contiguously.
"""

import numpy as np
from tvm.script import tirx as T

PARAMS = ["x", "y"]
CONST = {"x"}

RANK = 6


def template(attrs, shapes):
    shape = [int(v) for v in attrs["shape"][1:]]
    perm = [int(p) - 1 for p in attrs["perm"][1:]]
    if len(shape) > RANK:
        raise ValueError(f"transpose_s8: rank {len(shape)} > {RANK}")
    lead = RANK - len(shape)
    shape = [1] * lead + shape
    perm = list(range(lead)) + [p + lead for p in perm]
    istride = [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(RANK)]
    D = [shape[p] for p in perm]  # output extents
    S = [istride[p] for p in perm]  # input stride of each output axis
    O = [int(np.prod(D[i + 1:], dtype=np.int64)) for i in range(RANK)]  # output strides
    N = int(np.prod(shape, dtype=np.int64))

    @T.prim_func
    def kernel(x: T.handle("int8"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((N,), "int8", data=x)
        Y = T.decl_buffer((N,), "int8", data=y)
        for a0, a1, a2, a3, a4, a5 in T.grid(D[0], D[1], D[2], D[3], D[4], D[5]):
            Y[a0 * O[0] + a1 * O[1] + a2 * O[2] + a3 * O[3] + a4 * O[4] + a5] = \
                X[a0 * S[0] + a1 * S[1] + a2 * S[2] + a3 * S[3] + a4 * S[4] + a5 * S[5]]

    return kernel
