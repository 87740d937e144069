"""ep_pad_s8: constant padding of an int8 NHWC tensor along H, W and C (reference ops.pad_s8): the output is
filled with the quantized pad value, then the input is copied into its interior. The output keeps the input's
scale and zero point (TFLite PAD); the quantizer widens the input's calibrated range to hold the value."""

from tvm import tirx

from .common import buffer, copy_block, hwc, prim_func, store

PARAMS = ["x", "y"]
CONST = {"x"}


def template(attrs, shapes):
    t, l, _, _ = attrs["pads"]
    cf, _ = attrs.get("channel_pads", (0, 0))
    h, w, c = hwc(shapes["x"])
    oh, ow, oc = hwc(shapes["y"])
    from tvm.script.ir_builder import tirx as IRT

    with prim_func(PARAMS, ["int8", "int8"]) as f:
        X = buffer(f.args["x"], "int8", h * w * c)
        Y = buffer(f.args["y"], "int8", oh * ow * oc)
        with IRT.serial(0, oh * ow * oc) as i:
            store(Y, tirx.const(int(attrs["value"]), "int8"), i)
        copy_block(X, 0, (w * c, c, 1), Y, (t * ow + l) * oc + cf, (ow * oc, oc), (h, w, c))
    return f.func
