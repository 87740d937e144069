"""ep_resize_nearest_s8: y[oy, ox, :] = x[iy[oy], ix[ox], :] (NHWC int8), TFLite's RESIZE_NEAREST_NEIGHBOR.

``iy`` / ``ix`` are const int32 tables built at build time by reference.ops_spatial.nearest_table (TFLite's
float32 GetNearestNeighbor), read by the reference and by this kernel alike; the channel loop is a contiguous
copy.
"""

from tvm.script import tirx as T

PARAMS = ["x", "iy", "ix", "y"]
CONST = {"x", "iy", "ix"}


def template(attrs, shapes):
    _, H, W, C = shapes["x"]
    _, OH, OW, _ = shapes["y"]

    @T.prim_func
    def kernel(x: T.handle("int8"), iy: T.handle("int32"), ix: T.handle("int32"), y: T.handle("int8")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * C,), "int8", data=x)
        IY = T.decl_buffer((OH,), "int32", data=iy)
        IX = T.decl_buffer((OW,), "int32", data=ix)
        Y = T.decl_buffer((OH * OW * C,), "int8", data=y)
        for oy, ox in T.grid(OH, OW):
            for c in range(C):
                Y[(oy * OW + ox) * C + c] = X[(IY[oy] * W + IX[ox]) * C + c]

    return kernel
