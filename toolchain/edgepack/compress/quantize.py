"""Int8 post-training quantization: float-dialect graph (NCHW) -> integer-dialect graph (NHWC).

TensorFlow Lite's integer scheme (the one CMSIS-NN and TFLM follow):

* weights: symmetric, per output channel, int8 in [-127, 127], scale_c = max|w_c| / 127;
* activations: asymmetric, per tensor, int8, from the min/max seen on the calibration batch (range widened to
  include 0 so that real zero is exact); pooling, reshape and standalone clamps keep their input's parameters;
  softmax outputs scale 1/256, zero point -128;
* bias: int32, scale = input scale x weight scale of the channel, rounded to nearest;
* requantization: real multiplier s_in * s_w / s_out as a Q31 multiplier and a shift
  (:func:`edgepack.reference.arith.quantize_multiplier`);
* ReLU / ReLU6 / Clip that directly follow a conv, dense or add are fused into its output clamp;
* residual add: both inputs rescaled to twice the larger input scale with a 20-bit left shift, then
  requantized to the output (TFLite's ADD).

The integer graph is NHWC; the dense layer after a flatten of a spatial tensor has its weight columns
permuted from PyTorch's (C, H, W) order to (H, W, C), so no transpose runs on the device.
"""

from __future__ import annotations

import sys

import numpy as np

from ..errors import EdgepackError
from ..graph import Graph, QParams
from ..reference.arith import quantize_multiplier

SOFTMAX_LUT_BITS = 16
ADD_LEFT_SHIFT = 20


def activation_qparams(lo: float, hi: float) -> QParams:
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo < 1e-12:
        return QParams(1.0, 0)
    scale = (hi - lo) / 255.0
    zp = int(round(-128 - lo / scale))
    return QParams(scale, int(np.clip(zp, -128, 127)))


def quantize_value(x, q: QParams):
    return np.clip(np.round(np.asarray(x, np.float64) / q.scale) + q.zero_point, -128, 127).astype(np.int8)


def dequantize_value(x, q: QParams):
    return (np.asarray(x, np.float64) - q.zero_point) * q.scale


def calibration_ranges(g: Graph, calib: np.ndarray) -> dict:
    from ..reference.float_exec import run_float

    ranges = {}
    step = 64
    n = len(calib)
    for i in range(0, n, step):
        acts = run_float(g, calib[i:i + step])
        for name, v in acts.items():
            lo, hi = float(np.min(v)), float(np.max(v))
            if name in ranges:
                lo, hi = min(lo, ranges[name][0]), max(hi, ranges[name][1])
            ranges[name] = (lo, hi)
        if n > step:
            print(f"\rcalibrating: {min(i + step, n)}/{n} images", end="", file=sys.stderr, flush=True)
    if n > step:
        print(file=sys.stderr)
    return ranges


def _fused_activation(g: Graph, node):
    """If the only consumer of node's output is relu/clip, return (that node, lo, hi) in float."""
    out = node.outputs[0]
    cons = g.consumers(out)
    if len(cons) == 1 and out not in g.outputs and cons[0].op in ("relu", "clip"):
        c = cons[0]
        if c.op == "relu":
            return c, 0.0, None
        return c, c.attrs.get("min"), c.attrs.get("max")
    return None, None, None


def _clamp_bounds(q: QParams, lo, hi):
    qmin, qmax = -128, 127
    if lo is not None:
        qmin = max(qmin, int(np.round(lo / q.scale)) + q.zero_point)
    if hi is not None:
        qmax = min(qmax, int(np.round(hi / q.scale)) + q.zero_point)
    return int(qmin), int(qmax)


def _nhwc(shape):
    shape = tuple(shape)
    return (shape[0], shape[2], shape[3], shape[1]) if len(shape) == 4 else shape


def quantize(g: Graph, calib: np.ndarray, per_channel: bool = True) -> Graph:
    """Quantize a float-dialect graph with a calibration batch (NCHW float32) into the integer dialect."""
    ranges = calibration_ranges(g, calib)
    q = Graph()
    q.meta = dict(g.meta)
    q.meta["quantization"] = {"calibration_images": int(len(calib)), "calibration_method": "min-max",
                              "weights": "int8 symmetric " + ("per-channel" if per_channel else "per-tensor"),
                              "activations": "int8 asymmetric per-tensor", "bias": "int32",
                              "rounding": "round half to even (weights, bias); requantization as TFLite: "
                                          "SRDHM (ties toward +inf) then rounding shift (ties away from 0)"}
    qp: dict[str, QParams] = {}
    alias: dict[str, str] = {}  # float tensor name -> int tensor name (fused activations map through)
    flat_from: dict[str, tuple] = {}  # int tensor -> NCHW shape it was flattened from

    def name_of(t):
        return alias.get(t, t)

    def add_act(name, shape, quant):
        q.add_tensor(name, _nhwc(shape), "int8", quant=quant)
        qp[name] = quant

    xin = g.inputs[0]
    add_act(xin, g.tensors[xin].shape, activation_qparams(*ranges[xin]))
    q.inputs = [xin]
    skip = set()

    for n in g.nodes:
        if n.name in skip:
            continue
        x = name_of(n.inputs[0])
        out = n.outputs[0]
        fshape = g.tensors[out].shape
        if n.op in ("conv2d", "dense"):
            act, lo, hi = _fused_activation(g, n)
            final = act.outputs[0] if act is not None else out
            if act is not None:
                skip.add(act.name)
                alias[out] = final
            oq = activation_qparams(*ranges[final])
            add_act(final, fshape, oq)
            iq = qp[x]
            w = g.const(n.inputs[1]).astype(np.float64)
            b = g.const(n.inputs[2]).astype(np.float64) if len(n.inputs) > 2 else np.zeros(w.shape[0])
            if n.op == "dense" and x in flat_from:
                c, h, wd = flat_from[x][1:]
                w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
            if not per_channel:
                amax = np.full_like(amax, amax.max())
            ws = np.where(amax > 0, amax / 127.0, 1.0)
            wq = np.clip(np.round(w / ws.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
            bq = np.clip(np.round(b / (iq.scale * ws)), -(2**31), 2**31 - 1).astype(np.int32)
            ms = [quantize_multiplier(float(iq.scale * s / oq.scale)) for s in ws]
            mult = np.array([m for m, _ in ms], np.int32)
            shift = np.array([s for _, s in ms], np.int32)
            amin, amax_ = _clamp_bounds(oq, lo, hi)
            attrs = dict(in_zp=iq.zero_point, out_zp=oq.zero_point, act_min=amin, act_max=amax_,
                         w_scale=ws.tolist(), fused_activation=act.op if act is not None else None,
                         folded_bn=n.attrs.get("folded_bn"))
            if n.op == "dense":
                op = "dense_s8"
                wk = wq
            else:
                grp = n.attrs["group"]
                cin = g.tensors[n.inputs[0]].shape[1]
                attrs.update(strides=tuple(n.attrs["strides"]), pads=tuple(n.attrs["pads"]),
                             dilations=tuple(n.attrs["dilations"]))
                if grp == 1:
                    op, wk = "conv2d_s8", wq.transpose(0, 2, 3, 1)  # OIHW -> OHWI
                elif grp == cin and w.shape[0] % cin == 0:
                    op, wk = "dwconv2d_s8", wq[:, 0].transpose(1, 2, 0)  # (O,1,KH,KW) -> (KH,KW,O)
                    attrs["depth_multiplier"] = w.shape[0] // cin
                else:
                    raise EdgepackError(f"node '{n.name}': grouped convolution with groups={grp} is not "
                                        "supported (only groups=1 and depthwise)")
            pre = n.name
            ins = [x, q.add_const(f"{pre}_w", np.ascontiguousarray(wk)), q.add_const(f"{pre}_bias", bq),
                   q.add_const(f"{pre}_mult", mult), q.add_const(f"{pre}_shift", shift)]
            q.tensors[f"{pre}_w"].quant = QParams(ws, 0, 0)
            q.add_node(op, n.name, ins, [final], **attrs)
        elif n.op == "add":
            act, lo, hi = _fused_activation(g, n)
            final = act.outputs[0] if act is not None else out
            if act is not None:
                skip.add(act.name)
                alias[out] = final
            oq = activation_qparams(*ranges[final])
            add_act(final, fshape, oq)
            a, b = x, name_of(n.inputs[1])
            qa, qb = qp[a], qp[b]
            twice = 2 * max(qa.scale, qb.scale)
            ma, sa = quantize_multiplier(qa.scale / twice)
            mb, sb = quantize_multiplier(qb.scale / twice)
            mo, so = quantize_multiplier(twice / ((1 << ADD_LEFT_SHIFT) * oq.scale))
            amin, amax_ = _clamp_bounds(oq, lo, hi)
            q.add_node("add_s8", n.name, [a, b], [final], a_zp=qa.zero_point, b_zp=qb.zero_point,
                       left_shift=ADD_LEFT_SHIFT, a_mult=ma, a_shift=sa, b_mult=mb, b_shift=sb,
                       out_mult=mo, out_shift=so, out_zp=oq.zero_point, act_min=amin, act_max=amax_,
                       fused_activation=act.op if act is not None else None)
        elif n.op in ("maxpool", "avgpool", "global_avgpool"):
            iq = qp[x]
            add_act(out, fshape, iq)
            ishape = g.tensors[n.inputs[0]].shape
            if n.op == "global_avgpool":
                kernel, strides, pads, cip = (ishape[2], ishape[3]), (ishape[2], ishape[3]), (0, 0, 0, 0), True
            else:
                kernel, strides, pads = tuple(n.attrs["kernel"]), tuple(n.attrs["strides"]), tuple(n.attrs["pads"])
                cip = bool(n.attrs.get("count_include_pad", True))
            if n.op == "maxpool":
                q.add_node("maxpool_s8", n.name, [x], [out], kernel=kernel, strides=strides, pads=pads)
            else:
                q.add_node("avgpool_s8", n.name, [x], [out], kernel=kernel, strides=strides, pads=pads,
                           count_include_pad=cip, zp=iq.zero_point)
        elif n.op in ("relu", "clip"):
            iq = qp[x]
            add_act(out, fshape, iq)
            lo, hi = (0.0, None) if n.op == "relu" else (n.attrs.get("min"), n.attrs.get("max"))
            amin, amax_ = _clamp_bounds(iq, lo, hi)
            q.add_node("clamp_s8", n.name, [x], [out], lo=amin, hi=amax_)
        elif n.op in ("flatten", "reshape"):
            iq = qp[x]
            ishape = g.tensors[n.inputs[0]].shape
            if len(ishape) == 4 and ishape[2] * ishape[3] > 1 and ishape[1] > 1:
                if len(fshape) != 2 or fshape[0] != ishape[0]:
                    raise EdgepackError(f"node '{n.name}': reshape of a {ishape} tensor to {fshape} is not "
                                        "supported (only flattening to (N, C*H*W) before a dense layer)")
                for c in g.consumers(out):
                    if c.op != "dense":
                        raise EdgepackError(f"node '{n.name}': a flattened spatial tensor must feed a dense "
                                            f"layer, not '{c.op}' ('{c.name}')")
                if out in g.outputs:
                    raise EdgepackError(f"node '{n.name}': a flattened spatial tensor cannot be the output")
                flat_from[out] = tuple(ishape)
            add_act(out, fshape, iq)
            q.add_node("reshape", n.name, [x], [out], shape=_nhwc(fshape))
        elif n.op == "softmax":
            iq = qp[x]
            shape = g.tensors[n.inputs[0]].shape
            if n.attrs.get("axis", -1) % len(shape) != len(shape) - 1 or int(np.prod(shape[:-1])) != 1:
                raise EdgepackError(f"node '{n.name}': softmax is supported over the last axis of (1, N) only")
            if shape[-1] >= 2**(31 - SOFTMAX_LUT_BITS):
                raise EdgepackError(f"node '{n.name}': softmax over {shape[-1]} classes would overflow int32")
            if out not in g.outputs:
                raise EdgepackError(f"node '{n.name}': softmax is supported only as the last operation")
            lut = np.round(np.exp(-iq.scale * np.arange(256)) * (1 << SOFTMAX_LUT_BITS)).astype(np.int32)
            add_act(out, fshape, QParams(1.0 / 256, -128))
            q.add_node("softmax_s8", n.name, [x, q.add_const(f"{n.name}_lut", lut)], [out])
        else:
            raise EdgepackError(f"node '{n.name}': operator '{n.op}' cannot be quantized")
    q.outputs = [name_of(t) for t in g.outputs]
    return q
