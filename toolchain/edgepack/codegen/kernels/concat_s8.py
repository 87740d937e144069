"""ep_concat_s8: concatenation of n int8 NHWC tensors along H, W or C (TFLite CONCATENATION); an input whose
scale or zero point differs from the output's is requantized to it on the way (TFLite's int8 QUANTIZE:
clamp(requantize(x - zp_i, mult_i, shift_i) + out_zp)).

The memory plan (codegen/memplan.py) lets producers write their input straight into its slice of the output
where the requantization is the identity and the layout allows; those inputs are skipped here
(attrs["layout"]["in_place"]), and a concat of such inputs only runs no code at all. The output may itself be a
strided view (a slice of an outer concat); inputs may be strided views (slices of another tensor). Built with
TVM's IRBuilder: the number of inputs is the layer's.
"""

import numpy as np

from .common import buffer, copy_block, extent, hwc, prim_func, variadic_params, view

params = variadic_params  # x0 .. x{n-1}, y


def template(attrs, shapes):
    n = len(attrs["zps"])
    names = variadic_params(n)
    axis = int(attrs["axis"])
    in_place = set((attrs.get("layout") or {}).get("in_place", []))
    yrs, yps = view(attrs, "y", shapes["y"])
    with prim_func(names, ["int8"] * (n + 1)) as f:
        Y = buffer(f.args["y"], "int8", extent(shapes["y"], yrs, yps))
        off = 0
        for i, p in enumerate(names[:-1]):
            shape = shapes[p]
            h, w, c = hwc(shape)
            if i not in in_place:
                rs, ps = view(attrs, p, shape)
                X = buffer(f.args[p], "int8", extent(shape, rs, ps))
                base = {1: off * yrs, 2: off * yps, 3: off}[axis] if len(shapes["y"]) == 4 else off
                requant = None if attrs["identity"][i] else (attrs["zps"][i], attrs["mults"][i], attrs["shifts"][i],
                                                             attrs["out_zp"])
                copy_block(X, 0, (rs, ps, 1), Y, base, (yrs, yps), (h, w, c), requant)
            off += shape[axis] if len(shape) == 4 else int(np.prod(shape[1:]))
    return f.func
