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
permuted from PyTorch's (C, H, W) order to (H, W, C), so no transpose runs on the device. Grouped convolutions
(1 < groups < C) are conv2d_s8 with a groups attribute, int8 weights only. Transposes, channel shuffles,
other reshapes, resizes and transposed convolutions: :mod:`edgepack.compress.quantize_spatial`; LSTM and GRU
(TFLite's integer LSTM): :mod:`edgepack.compress.quantize_rnn`.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np

from ..errors import EdgepackError
from ..graph import Graph, QParams
from ..reference.arith import quantize_multiplier
from . import quantize_rnn, quantize_spatial

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


def binary_weights(w: np.ndarray, rtol: float = 1e-4):
    """If every output channel of ``w`` holds exactly two values +-a_c, return (a, negative mask), else None."""
    flat = np.abs(w.reshape(w.shape[0], -1).astype(np.float64))
    a = flat.mean(axis=1)
    if np.any(a <= 0) or not np.allclose(flat, a[:, None], rtol=rtol, atol=0):
        return None
    return a, w < 0


def _lower_binary(g, q, n, x, packed, qp, add_act, fuse_output):
    """A conv2d / dense whose input is sign()ed: XNOR-popcount layer (design section 4).

    Output as bits (bconv2d_b1) when every consumer is a sign: y_o = a_o * dot + b_o < 0 <=> dot < T_o with
    T_o = ceil(-b_o / a_o) (BN already folded into a and b; a > 0, sign flips live in the weight bits).
    Otherwise int8 (bconv2d_b1_s8): acc = (dot << S) + round(b * 2^S / a), requantized by a / (2^S s_out).
    A dense layer reads its packed input (1, H, W, Cw) as one full-size window, so flatten costs nothing.
    """
    from ..pack.bitplanes import pack

    w = g.const(n.inputs[1]).astype(np.float64)
    b = g.const(n.inputs[2]).astype(np.float64) if len(n.inputs) > 2 else np.zeros(w.shape[0])
    bw = binary_weights(w)
    if bw is None:
        raise EdgepackError(f"node '{n.name}': its input is binary (sign) but its weights are not two-valued per "
                            "output channel; binarize the layer (ReCU) or build with --weights binary")
    alpha, neg = bw
    info = packed[x]
    c, (h, wd) = info["channels"], info["hw"]
    o = w.shape[0]
    if n.op == "dense":
        if w.shape[1] != c * h * wd:
            raise EdgepackError(f"node '{n.name}': binary dense expects {c * h * wd} inputs, has {w.shape[1]}")
        neg4 = neg.reshape(o, c, h, wd).transpose(0, 2, 3, 1)  # PyTorch flattens (C, H, W): to (O, H, W, C)
        attrs = dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1))
    else:
        if n.attrs["group"] != 1:
            raise EdgepackError(f"node '{n.name}': binary grouped / depthwise convolution is not supported")
        neg4 = neg.transpose(0, 2, 3, 1)  # OIHW -> OHWI
        attrs = dict(strides=tuple(n.attrs["strides"]), pads=tuple(n.attrs["pads"]),
                     dilations=tuple(n.attrs["dilations"]))
    kh, kw = neg4.shape[1:3]
    k = kh * kw * c
    wq = q.add_const(f"{n.name}_wbits", pack(neg4))
    q.tensors[wq].quant = QParams(alpha, 0, 0)
    out = n.outputs[0]
    fshape = g.tensors[out].shape
    cons = g.consumers(out)
    common = dict(channels=c, alpha=alpha.tolist(), folded_bn=n.attrs.get("folded_bn"), weight_format="binary",
                  **attrs)
    if cons and out not in g.outputs and all(cn.op == "sign" for cn in cons):
        thresh = np.clip(np.ceil(-b / alpha), -k - 1, k + 1).astype(np.int32)
        oh, ow = (fshape[2], fshape[3]) if n.op == "conv2d" else (1, 1)
        q.add_tensor(out, (1, oh, ow, (o + 31) // 32), "uint32")
        packed[out] = {"channels": o, "hw": (oh, ow)}
        q.add_node("bconv2d_b1", n.name, [x, wq, q.add_const(f"{n.name}_thresh", thresh)], [out], **common)
        return
    act, lo, hi, final, oq = fuse_output(n, add=False)
    s_acc = int(max(0, min(8, 30 - int(np.ceil(np.log2(k + 1))))))
    bias = np.clip(np.round(b * (1 << s_acc) / alpha), -(2**31), 2**31 - 1).astype(np.int32)
    ms = [quantize_multiplier(float(a / ((1 << s_acc) * oq.scale))) for a in alpha]
    amin, amax = _clamp_bounds(oq, lo, hi)
    y = final
    if n.op == "dense":  # the kernel writes (1, 1, 1, O); the graph's tensor is (1, O)
        y = q.fresh(final + "_4d")
        q.add_tensor(y, (1, 1, 1, o), "int8", quant=oq)
        qp[y] = oq
    else:
        add_act(final, fshape, oq)
    q.add_node("bconv2d_b1_s8", n.name,
               [x, wq, q.add_const(f"{n.name}_bias", bias),
                q.add_const(f"{n.name}_mult", np.array([m for m, _ in ms], np.int32)),
                q.add_const(f"{n.name}_shift", np.array([sh for _, sh in ms], np.int32))], [y],
               acc_shift=s_acc, out_zp=oq.zero_point, act_min=amin, act_max=amax,
               fused_activation=act.op if act is not None else None, **common)
    if n.op == "dense":
        add_act(final, fshape, oq)
        q.add_node("reshape", n.name + "_flat", [y], [final], shape=tuple(fshape))


def _exp_layer(n, w_ohwi, b, in_scale, out_scale, bits, per_channel):
    """Exponent-code a layer (weights in kernel order, output channel first): (codes packed, bias, mult,
    shift, top, scales, levels). The int32 accumulator bound (pack.expcodes.accumulator_bound) must hold:
    the window of exponents shrinks from 2^(bits-1)-1 levels until it does; a layer for which even one
    level overflows is refused with the numbers."""
    from ..pack import expcodes
    from .expdisc import exp_discretize

    full = (1 << (bits - 1)) - 1
    for levels in range(full, 0, -1):
        codes, scale = exp_discretize(w_ohwi, bits, per_channel=per_channel, max_levels=levels)
        m = codes.astype(np.int64) & full
        top = int(m.max() - 1) if m.max() > 0 else 0
        w_int = expcodes.decode(codes, bits, top)
        real = in_scale * np.asarray(scale, np.float64) * 2.0 ** -top
        bias = np.clip(np.round(b / real), -(2**31), 2**31 - 1).astype(np.int64)
        bound = expcodes.accumulator_bound(w_int, bias)
        if bound < 2**31:
            ms = [quantize_multiplier(float(r / out_scale)) for r in real]
            return (expcodes.pack(codes, bits), bias.astype(np.int32), np.array([x for x, _ in ms], np.int32),
                    np.array([x for _, x in ms], np.int32), top, np.asarray(scale), levels)
    raise EdgepackError(f"node '{n.name}': exp{bits} weights would overflow the int32 accumulator even with one "
                        f"exponent level (worst case {bound} >= 2^31 for K = {w_ohwi[0].size}); use int8 for it")


def _sparse_layer(op, wk, attrs):
    """``--weights sparse``: store an int8 conv / dense layer's weights in whichever of dense int8, CSR and
    bitmask rows (pack/sparse.py) takes the fewest bytes; a layer left dense says why in
    ``attrs["sparse_note"]`` (depthwise layers always stay dense). Returns (op, [(tensor suffix, array)])."""
    from ..pack import sparse

    dense = (op, [("w", wk)])
    if op not in ("conv2d_s8", "dense_s8"):
        attrs["sparse_note"] = "kept dense int8: no sparse kernel for depthwise convolution"
        return dense
    nnz = int(np.count_nonzero(wk))
    sizes = sparse.encoded_bytes(wk)
    enc = sparse.choose(wk)
    attrs.update(nnz=nnz, density=round(nnz / max(wk.size, 1), 4), encoded_bytes=sizes)
    if enc == "dense":
        attrs["sparse_note"] = (f"kept dense int8: {sizes['dense']} B dense against "
                                + ", ".join(f"{sizes[k]} B {k}" for k in ("csr", "bitmask") if k in sizes)
                                + f" at density {nnz / max(wk.size, 1):.3f}")
        return dense
    values, second, rowptr = sparse.pack(wk, enc)
    attrs.update(wshape=tuple(int(v) for v in wk.shape), weight_format=f"sparse-{enc}")
    return f"{op}_{enc}", [("wval", values), ("widx" if enc == "csr" else "wmask", second), ("wptr", rowptr)]


def quantize(g: Graph, calib: np.ndarray, per_channel: bool = True, weight_formats: dict | None = None) -> Graph:
    """Quantize a float-dialect graph with a calibration batch (NCHW float32) into the integer dialect.

    ``weight_formats`` maps layer names to "int8" (default), "exp2".."exp6" (exponent codes) or "sparse" (int8
    weights in compressed sparse rows where that is smaller). A requantization scale that int32 cannot hold
    (weights or a bias vastly larger than the layer's activations, as in a corrupt file) is one EdgepackError
    naming the node."""
    current = [None]
    try:
        return _quantize(g, calib, per_channel, weight_formats, current)
    except ValueError as e:
        if current[0] is None or "multiplier" not in str(e):
            raise
        raise EdgepackError(f"node '{current[0]}': cannot be quantized to int8 ({e}); its weights are out of "
                            f"all proportion to its activations: check the model file and its weights") from None


def _quantize(g, calib, per_channel, weight_formats, current):
    weight_formats = weight_formats or {}
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

    packed: dict[str, dict] = {}  # int tensor name -> {"channels", "hw"} of packed binary tensors

    def fuse_output(n, add=True):
        """Fuse a following relu/clip into n's output; return (act, lo, hi, output name, output qparams)."""
        act, lo, hi = _fused_activation(g, n)
        final = act.outputs[0] if act is not None else n.outputs[0]
        if act is not None:
            skip.add(act.name)
            alias[n.outputs[0]] = final
        oq = activation_qparams(*ranges[final])
        if add:
            add_act(final, g.tensors[final].shape, oq)
        return act, lo, hi, final, oq
    def weights_s8(w, b, iq, oq):
        """Symmetric int8 weights per output channel (axis 0) or per tensor, int32 bias at input scale x
        weight scale, Q31 multipliers and shifts: (wq, bq, mult, shift, weight scales)."""
        amax = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        if not per_channel:
            amax = np.full_like(amax, amax.max())
        ws = np.where(amax > 0, amax / 127.0, 1.0)
        wq = np.clip(np.round(w / ws.reshape((-1,) + (1,) * (w.ndim - 1))), -127, 127).astype(np.int8)
        bq = np.clip(np.round(b / (iq.scale * ws)), -(2**31), 2**31 - 1).astype(np.int32)
        ms = [quantize_multiplier(float(iq.scale * s / oq.scale)) for s in ws]
        return wq, bq, np.array([m for m, _ in ms], np.int32), np.array([s for _, s in ms], np.int32), ws

    ctx = SimpleNamespace(g=g, q=q, qp=qp, name_of=name_of, add_act=add_act, fuse_output=fuse_output,
                          weights=weights_s8, clamp_bounds=_clamp_bounds, ranges=ranges)
    handlers = {**quantize_spatial.HANDLERS, **quantize_rnn.HANDLERS}
    for n in g.nodes:
        current[0] = n.name
        if n.name in skip:
            continue
        if n.op in handlers and name_of(n.inputs[0]) not in packed:
            handlers[n.op](ctx, n)
            continue
        x = name_of(n.inputs[0])
        out = n.outputs[0]
        fshape = g.tensors[out].shape
        if n.op == "sign":
            if x in packed:  # produced as bits by a binary layer with BN + sign folded into thresholds
                alias[out] = x
                continue
            xs = q.tensors[x].shape
            hw, c = (tuple(xs[1:3]), xs[3]) if len(xs) == 4 else ((1, 1), int(np.prod(xs[1:])))
            pname = out
            q.add_tensor(pname, (1,) + hw + ((c + 31) // 32,), "uint32")
            packed[pname] = {"channels": c, "hw": hw}
            q.add_node("binarize_s8", n.name, [x], [pname], zp=qp[x].zero_point, channels=c)
            continue
        if n.op in ("flatten", "reshape") and x in packed:
            alias[out] = x  # packed bits stay (1, H, W, Cw); the binary dense reads them as a full-size window
            continue
        if n.op in ("conv2d", "dense") and x in packed:
            _lower_binary(g, q, n, x, packed, qp, add_act, fuse_output)
            continue
        if n.op in ("conv2d", "dense"):
            act, lo, hi, final, oq = fuse_output(n)
            iq = qp[x]
            w = g.const(n.inputs[1]).astype(np.float64)
            b = g.const(n.inputs[2]).astype(np.float64) if len(n.inputs) > 2 else np.zeros(w.shape[0])
            if n.op == "dense" and x in flat_from:
                c, h, wd = flat_from[x][1:]
                w = w.reshape(w.shape[0], c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            wq, bq, mult, shift, ws = weights_s8(w, b, iq, oq)
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
                else:  # 1 < groups < C (RegNet): conv2d_s8 over (O, KH, KW, C/groups) weights
                    op, wk = "conv2d_s8", wq.transpose(0, 2, 3, 1)
                    attrs["groups"] = grp
            pre = n.name
            fmt = weight_formats.get(n.name, "int8")
            if attrs.get("groups", 1) != 1 and fmt != "int8":
                attrs["sparse_note"] = f"kept int8: no {fmt} kernel for grouped convolution"
                fmt = "int8"
            if fmt.startswith("exp"):
                bits = int(fmt[3:])
                wf = w if op == "dense_s8" else (w.transpose(0, 2, 3, 1) if op == "conv2d_s8" else w[:, 0])
                codes, bq, mult, shift, top, ws, levels = _exp_layer(n, wf, b, iq.scale, oq.scale, bits,
                                                                     per_channel)
                op = op.replace("_s8", "_exp")
                wk = codes
                attrs.update(bits=bits, top=top, wshape=tuple(wf.shape), exp_levels=levels, w_scale=ws.tolist(),
                             weight_format=fmt)
            op, warrays = _sparse_layer(op, wk, attrs) if fmt == "sparse" else (op, [("w", wk)])
            wts = [q.add_const(f"{pre}_{k}", np.ascontiguousarray(v)) for k, v in warrays]
            q.tensors[wts[0]].quant = QParams(ws, 0, 0)
            ins = [x, *wts, q.add_const(f"{pre}_bias", bq), q.add_const(f"{pre}_mult", mult),
                   q.add_const(f"{pre}_shift", shift)]
            q.add_node(op, n.name, ins, [final], **attrs)
        elif n.op == "add":
            act, lo, hi, final, oq = fuse_output(n)
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
                q.add_node("maxpool_s8", n.name, [x], [out], kernel=kernel, strides=strides, pads=pads,
                           dilations=tuple(n.attrs.get("dilations", (1, 1))))
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
            users = g.consumers(out)
            if not (len(ishape) == 4 and len(fshape) == 2 and out not in g.outputs and users
                    and all(c.op == "dense" for c in users)):  # not a flatten before dense layers
                quantize_spatial.lower_reshape(ctx, n)  # an alias where the memory order is unchanged
                continue
            flat_from[out] = tuple(ishape)  # the dense weights take the NHWC order
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
