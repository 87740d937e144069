"""ep_slice_s8: y = x[start:end:step] along one NHWC axis, copied; requantized where it feeds a concat in
another scale (as concat_s8's inputs). A slice with step 1 and no requantization is usually a view of x instead
(codegen/memplan.py) and runs no code; this kernel is the copy for the others. Input and output may be strided
views."""

from .common import buffer, copy_block, extent, hwc, prim_func, view

PARAMS = ["x", "y"]
CONST = {"x"}


def template(attrs, shapes):
    axis, start, step = int(attrs["axis"]), int(attrs["start"]), int(attrs.get("step", 1))
    xrs, xps = view(attrs, "x", shapes["x"])
    yrs, yps = view(attrs, "y", shapes["y"])
    four = len(shapes["x"]) == 4
    base = ({1: start * xrs, 2: start * xps, 3: start}[axis]) if four else start
    strides = [xrs, xps, 1]
    k = (axis - 1) if four else 2
    strides[k] *= step
    requant = None if attrs.get("identity", True) else (attrs["in_zp"], attrs["mult"], attrs["shift"],
                                                          attrs["out_zp"])
    with prim_func(PARAMS, ["int8", "int8"]) as f:
        X = buffer(f.args["x"], "int8", extent(shapes["x"], xrs, xps))
        Y = buffer(f.args["y"], "int8", extent(shapes["y"], yrs, yps))
        copy_block(X, base, tuple(strides), Y, 0, (yrs, yps), hwc(shapes["y"]), requant)
    return f.func
