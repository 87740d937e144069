"""Quantization rules of the layout, resize and transposed-convolution ops (issue 14 part B), one handler per
float op (:data:`HANDLERS`, called by :func:`edgepack.compress.quantize.quantize`).

* ``transpose``, ``channel_shuffle`` and reshapes keep the input's int8 values, scale and zero point. The
  integer dialect stores a 4-D tensor X as NHWC memory X.transpose(s), s = (0, 2, 3, 1) (other ranks in their
  own order); a framework transpose P then moves memory by K = s^-1 . P . s (K[i] = s^-1[P[s[i]]]). With the
  size-1 axes dropped and the axes that stay together merged (:func:`merge_axes`), K is either the identity --
  no kernel, the output aliases the input (a ``reshape``) -- or one ``transpose_s8``. A channel shuffle is
  the NHWC view (H, W, g, C/g) -> (H, W, C/g, g). A reshape that changes the NHWC memory order goes through
  the framework order: NHWC -> NCHW copy, the reshape (free), NCHW -> NHWC copy, each dropped where it is the
  identity.
* ``resize``: output scale and zero point = the input's (TensorFlow Lite requires it for int8 resizes).
  Bilinear is TFLite's RESIZE_BILINEAR: coordinate transforms asymmetric -> (align_corners=False,
  half_pixel_centers=False), half_pixel / pytorch_half_pixel -> (False, True), align_corners -> (True, False).
  Nearest is a table per axis: TFLite's GetNearestNeighbor where the model's rounding is one of TFLite's
  variants (asymmetric + floor: PyTorch 'nearest'; half_pixel + round_prefer_ceil: 'nearest-exact';
  align_corners + round half up), otherwise the framework's own index (ONNX's other nearest modes), recorded
  in the node's ``index_rule``.
* ``conv_transpose2d``: as conv2d -- symmetric per-output-channel int8 weights (stored (O, KH, KW, I)), int32
  bias at input scale x weight scale, Q31 multiplier and shift per channel, a following ReLU / clip fused
  into the output clamp (TFLite TRANSPOSE_CONV).
"""

from __future__ import annotations

import numpy as np

from ..errors import EdgepackError
from ..graph import QParams
from ..reference.ops_spatial import nearest_table

TFLITE_RESIZE = {"asymmetric": (False, False), "half_pixel": (False, True), "pytorch_half_pixel": (False, True),
                 "align_corners": (True, False)}
TFLITE_NEAREST = {("asymmetric", "floor"), ("half_pixel", "round_prefer_ceil"),
                  ("pytorch_half_pixel", "round_prefer_ceil"), ("align_corners", "round_prefer_ceil")}


def std_perm(rank: int) -> tuple:
    """Axis order of the integer dialect's memory for a float tensor of this rank (NHWC for 4-D)."""
    return (0, 2, 3, 1) if rank == 4 else tuple(range(rank))


def merge_axes(shape, perm) -> tuple:
    """(shape, perm) of y = x.reshape(shape).transpose(perm) with size-1 axes dropped and the axes that stay
    adjacent and in order merged; the batch axis 0 stays first and alone."""
    keep = [0] + [i for i in range(1, len(shape)) if shape[i] != 1]
    pos = {a: j for j, a in enumerate(keep)}
    dims = [shape[a] for a in keep]
    p = [pos[a] for a in perm if a in pos]
    groups = [[p[0]]]
    for a in p[1:]:
        if groups[-1][-1] != 0 and a == groups[-1][-1] + 1:
            groups[-1].append(a)
        else:
            groups.append([a])
    order = sorted(range(len(groups)), key=lambda k: groups[k][0])
    mshape = tuple(int(np.prod([dims[a] for a in groups[k]])) for k in order)
    rank = {k: j for j, k in enumerate(order)}
    return mshape, tuple(rank[k] for k in range(len(groups)))


def _memory_order(shape) -> np.ndarray:
    """Framework flat index of each element of a tensor of ``shape``, in the integer dialect's memory order."""
    return np.arange(int(np.prod(shape))).reshape(shape).transpose(std_perm(len(shape))).ravel()


def _permute(ctx, name, x, xshape, perm, y, yshape, quant):
    """Int tensor y (shape ``yshape``) = int tensor x (shape ``xshape``) transposed by ``perm``: one
    transpose_s8 (merged axes) or, where the memory order does not change, an alias."""
    q = ctx.q
    if y not in q.tensors:
        q.add_tensor(y, tuple(yshape), "int8", quant=quant)
    mshape, mperm = merge_axes(tuple(xshape), tuple(perm))
    if mperm == tuple(range(len(mperm))):
        q.add_node("reshape", name, [x], [y], shape=tuple(yshape))
        return
    tshape = tuple(mshape[p] for p in mperm)
    t = y
    if tshape != tuple(yshape):
        t = q.fresh(y + "_moved")
        q.add_tensor(t, tshape, "int8", quant=quant)
    q.add_node("transpose_s8", name, [x], [t], shape=mshape, perm=mperm)
    if t != y:
        q.add_node("reshape", name + "_view", [t], [y], shape=tuple(yshape))


def lower_transpose(ctx, n):
    x = ctx.name_of(n.inputs[0])
    iq = ctx.qp[x]
    xs = ctx.g.tensors[n.inputs[0]].shape
    perm = tuple(n.attrs["perm"])
    s = std_perm(len(xs))
    inv = np.argsort(s)
    k = tuple(int(inv[perm[s[i]]]) for i in range(len(xs)))
    out = n.outputs[0]
    ctx.add_act(out, ctx.g.tensors[out].shape, iq)
    _permute(ctx, n.name, x, ctx.q.tensors[x].shape, k, out, ctx.q.tensors[out].shape, iq)


def lower_channel_shuffle(ctx, n):
    x = ctx.name_of(n.inputs[0])
    iq = ctx.qp[x]
    _, h, w, c = ctx.q.tensors[x].shape
    grp = int(n.attrs["groups"])
    out = n.outputs[0]
    ctx.add_act(out, ctx.g.tensors[out].shape, iq)
    _permute(ctx, n.name, x, (1, h, w, grp, c // grp), (0, 1, 2, 4, 3), out, ctx.q.tensors[out].shape, iq)


def lower_reshape(ctx, n):
    """A reshape / flatten that is not a flatten before dense layers (quantize.py folds those into the dense
    weights): an alias where the memory order is unchanged, else through the framework order."""
    g, q = ctx.g, ctx.q
    x = ctx.name_of(n.inputs[0])
    iq = ctx.qp[x]
    s1, s2 = g.tensors[n.inputs[0]].shape, g.tensors[n.outputs[0]].shape
    out = n.outputs[0]
    ctx.add_act(out, s2, iq)
    if np.array_equal(_memory_order(s1), _memory_order(s2)):
        q.add_node("reshape", n.name, [x], [out], shape=q.tensors[out].shape)
        return
    a = q.fresh(out + "_framework_in")
    _permute(ctx, n.name + "_to_framework", x, q.tensors[x].shape, tuple(np.argsort(std_perm(len(s1)))), a, s1, iq)
    b = q.fresh(out + "_framework_out")
    q.add_tensor(b, tuple(s2), "int8", quant=iq)
    q.add_node("reshape", n.name, [a], [b], shape=tuple(s2))
    _permute(ctx, n.name + "_from_framework", b, s2, std_perm(len(s2)), out, q.tensors[out].shape, iq)


def lower_resize(ctx, n):
    x = ctx.name_of(n.inputs[0])
    iq = ctx.qp[x]
    a = n.attrs
    _, h, w, _ = ctx.q.tensors[x].shape
    oh, ow = a["size"]
    out = n.outputs[0]
    ctx.add_act(out, ctx.g.tensors[out].shape, iq)
    ac, hp = TFLITE_RESIZE[a["coord"]]
    scales = a.get("scales")
    own_scale = bool(scales) and any(sc and abs(float(sc) - o / i) > 1e-9 for sc, o, i in zip(scales, (oh, ow), (h, w)))
    note = " (the model's scale factor differs from out / in: TFLite's uses the sizes)" if own_scale else ""
    common = dict(align_corners=ac, half_pixel_centers=hp, coord=a["coord"])
    if a["mode"] == "bilinear":
        ctx.q.add_node("resize_bilinear_s8", n.name, [x], [out], size=(oh, ow),
                       index_rule=f"TFLite RESIZE_BILINEAR int8, 10-bit fixed point{note}", **common)
        return
    if (a["coord"], a["nearest"]) in TFLITE_NEAREST:
        iy, ix = nearest_table(oh, h, ac, hp), nearest_table(ow, w, ac, hp)
        rule = f"TFLite GetNearestNeighbor(align_corners={ac}, half_pixel_centers={hp}){note}"
    else:
        from ..reference.float_exec import nearest_indices
        sh, sw = scales or (None, None)
        iy = nearest_indices(oh, h, a["coord"], a["nearest"], sh).astype(np.int32)
        ix = nearest_indices(ow, w, a["coord"], a["nearest"], sw).astype(np.int32)
        rule = f"the framework's ({a['coord']}, {a['nearest']}: not a TFLite variant)"
    ins = [x, ctx.q.add_const(f"{n.name}_iy", iy), ctx.q.add_const(f"{n.name}_ix", ix)]
    ctx.q.add_node("resize_nearest_s8", n.name, ins, [out], index_rule=rule, nearest=a["nearest"], **common)


def lower_conv_transpose2d(ctx, n):
    if n.attrs.get("group", 1) != 1:
        raise EdgepackError(f"node '{n.name}': grouped transposed convolution (group={n.attrs['group']}) is not "
                            "supported; only group=1")
    g, q = ctx.g, ctx.q
    x = ctx.name_of(n.inputs[0])
    act, lo, hi, final, oq = ctx.fuse_output(n)
    iq = ctx.qp[x]
    w = g.const(n.inputs[1]).astype(np.float64).transpose(1, 0, 2, 3)  # (I, O, KH, KW) -> (O, I, KH, KW)
    b = g.const(n.inputs[2]).astype(np.float64) if len(n.inputs) > 2 else np.zeros(w.shape[0])
    wq, bq, mult, shift, ws = ctx.weights(w, b, iq, oq)
    amin, amax = ctx.clamp_bounds(oq, lo, hi)
    wt = q.add_const(f"{n.name}_w", np.ascontiguousarray(wq.transpose(0, 2, 3, 1)))  # OHWI
    q.tensors[wt].quant = QParams(ws, 0, 0)
    ins = [x, wt, q.add_const(f"{n.name}_bias", bq), q.add_const(f"{n.name}_mult", mult),
           q.add_const(f"{n.name}_shift", shift)]
    q.add_node("conv_transpose2d_s8", n.name, ins, [final], strides=tuple(n.attrs["strides"]),
               pads=tuple(n.attrs["pads"]), output_padding=tuple(n.attrs["output_padding"]),
               dilations=tuple(n.attrs["dilations"]), in_zp=iq.zero_point, out_zp=oq.zero_point, act_min=amin,
               act_max=amax, w_scale=ws.tolist(), fused_activation=act.op if act is not None else None,
               folded_bn=n.attrs.get("folded_bn"))


HANDLERS = {
    "transpose": lower_transpose,
    "channel_shuffle": lower_channel_shuffle,
    "resize": lower_resize,
    "conv_transpose2d": lower_conv_transpose2d,
}
