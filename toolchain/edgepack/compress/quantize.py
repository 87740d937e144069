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
* add / sub / sum (n-ary), broadcasting: the inputs rescaled to twice the largest input scale with a 20-bit left
  shift, summed with signs, then requantized to the output (TFLite's ADD / SUB); a constant operand is an int8
  per-tensor tensor;
* mul: TFLite's MUL (one requantization by s_a s_b / s_y), broadcasting (squeeze-excite);
* element-wise functions (sigmoid, tanh, hardswish, silu, gelu, ...; pointwise.UNARY) and any chain of them and
  of add / sub / mul by scalars on one input (x * sigmoid(x), GELU's erf and tanh forms): one int8 lookup table,
  every entry the correctly rounded float value; output scale fixed as TFLite fixes it (sigmoid and hardsigmoid
  1/256, -128; tanh 1/128, 0), else calibrated;
* prelu: TFLite's PRELU (int8 per-tensor slopes, a requantization per sign);
* concat: inputs whose producers set their own scale are produced in the concat's (as TFLite's converter does),
  the others requantized to it; slice and pad keep their input's scale (pad widens the input's range to hold its
  value).

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


def _sign_threshold(g, n, c) -> np.ndarray:
    """The threshold t of sign node ``n`` (sign(x - t)), as (c,) float64: zeros without one."""
    if n.op != "sign":
        return None
    if len(n.inputs) < 2:
        return np.zeros(c)
    return np.broadcast_to(np.asarray(g.const(n.inputs[1]), np.float64).reshape(-1), (c,)).copy()


def _lower_binary(g, q, n, x, packed, qp, add_act, fuse_output):
    """A conv2d / dense whose input is sign()ed: XNOR-popcount layer (design section 4).

    Output as bits (bconv2d_b1) when every consumer is a sign with the same threshold t (0 without one):
    y_o = a_o * dot + b_o < t_o <=> dot < T_o with T_o = ceil((t_o - b_o) / a_o) (BN already folded into a
    and b, a relu / clip before a threshold inside its range already dropped by the frontend; a > 0, sign flips
    live in the weight bits).
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
    t = _sign_threshold(g, cons[0], o) if cons else None
    if cons and out not in g.outputs and all(cn.op == "sign" and np.array_equal(_sign_threshold(g, cn, o), t)
                                             for cn in cons):
        thresh = np.clip(np.ceil((t - b) / alpha), -k - 1, k + 1).astype(np.int32)
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


CODEBOOK_P_MAX = 14  # codebook entries round(q^(m-1) * 2^P) <= 2^14: int16 even with the sign applied


def _exp_layer(n, w_ohwi, b, in_scale, out_scale, bits, per_channel):
    """``--weights expN``: exponent codes with a tuned base and an integer codebook (weights in kernel order,
    output channel first). Returns (codes packed, codebook, bias, mult, shift, scales, bases, P).

    compress.expdisc.exp_discretize chooses q and s per channel (or per layer; with per-channel scales, q is
    one per layer where a codebook row per channel would take more than 1/8 of the codes' bytes: small
    layers). The codebook of a channel (or of the layer) is
    C_0 = 0, C_m = round(q^(m-1) * 2^P) (m = 1 .. 2^(bits-1)-1), int16, with P the largest of 14, 13, .. 0
    for which the proven int32 accumulator bound holds: |bias| + 255 * sum |w_int| < 2^31 for every channel
    (pack.expcodes.accumulator_bound), the bias quantized as round(b / (s_in * s / 2^P)). The weights are
    rounded to the realised levels s * C_m / 2^P (compress.expdisc.nearest_codes), so what the integer
    reference computes is what was optimised; s_in * s / 2^P / s_out is the requantization multiplier. A
    layer for which even P = 0 overflows is refused with the numbers."""
    from ..pack import expcodes
    from .expdisc import exp_discretize, nearest_codes

    o, nl = w_ohwi.shape[0], 1 << (bits - 1)
    # a codebook row per channel where its bytes are at most 1/8 of the codes' (else one row for the layer,
    # the scales still per channel)
    base_rows = per_channel and o * nl * 2 * 8 <= o * expcodes.row_bytes(w_ohwi[0].size, bits)
    _, scale, base = exp_discretize(w_ohwi, bits, per_channel=per_channel, base_per_channel=base_rows)
    g = o if base_rows else 1
    powers = base[:g, None] ** np.arange(nl - 1)[None, :]
    for p in range(CODEBOOK_P_MAX, -1, -1):
        cb = np.zeros((g, nl), np.int64)
        cb[:, 1:] = np.round(powers * (1 << p))
        codes = nearest_codes(w_ohwi, scale[:, None] * cb / float(1 << p), bits)
        w_int = expcodes.decode_codebook(codes, bits, cb)
        real = in_scale * np.asarray(scale, np.float64) / float(1 << p)
        bias = np.clip(np.round(b / real), -(2**31), 2**31 - 1).astype(np.int64)
        bound = expcodes.accumulator_bound(w_int, bias)
        if bound < 2**31:
            ms = [quantize_multiplier(float(r / out_scale)) for r in real]
            return (expcodes.pack(codes, bits), cb.astype(np.int16), bias.astype(np.int32),
                    np.array([x for x, _ in ms], np.int32), np.array([x for _, x in ms], np.int32),
                    np.asarray(scale), np.asarray(base), p)
    raise EdgepackError(f"node '{n.name}': exp{bits} weights would overflow the int32 accumulator even with a "
                        f"codebook of 2^0 (worst case {bound} >= 2^31 for K = {w_ohwi[0].size}); use int8 for it")


def _pow2_layer(n, w_ohwi, b, in_scale, out_scale, bits, per_channel):
    """``--weights pow2-N``: power-of-two codes (weights in kernel order, output channel first): (codes packed,
    bias, mult, shift, top, scales, levels). The int32 accumulator bound (pack.expcodes.accumulator_bound) must
    hold: the window of exponents shrinks from 2^(bits-1)-1 levels until it does; a layer for which even one
    level overflows is refused with the numbers."""
    from ..pack import expcodes
    from .expdisc import pow2_discretize

    full = (1 << (bits - 1)) - 1
    for levels in range(full, 0, -1):
        codes, scale = pow2_discretize(w_ohwi, bits, per_channel=per_channel, max_levels=levels)
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
    raise EdgepackError(f"node '{n.name}': pow2-{bits} weights would overflow the int32 accumulator even with "
                        f"one exponent level (worst case {bound} >= 2^31 for K = {w_ohwi[0].size}); use int8 for it")


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

    ``weight_formats`` maps layer names to "int8" (default), "exp2".."exp8" (exponent codes, tuned base, integer
    codebook), "pow2-2".."pow2-6" (power-of-two exponent codes) or "sparse" (int8
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
    regions = pointwise_regions(g)
    adopted = _adjust_ranges(g, ranges, regions)
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
    skip = {m.name for r in regions.values() for m in r.nodes} - set(regions)

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
                          weights=weights_s8, clamp_bounds=_clamp_bounds, ranges=ranges,
                          adopted=adopted)
    handlers = {**quantize_spatial.HANDLERS, **quantize_rnn.HANDLERS}
    for n in g.nodes:
        current[0] = n.name
        if n.name in skip:
            continue
        if n.name in regions:
            _lower_lut(ctx, n, regions[n.name])
            continue
        if n.op in LOWERING:
            LOWERING[n.op](ctx, n)
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
            iq = qp[x]
            t = _sign_threshold(g, n, c)
            # x - t >= 0 <=> s (q - zp) >= t <=> q >= zp + ceil(t / s): bit 1 (-1) where q < that
            tq = np.clip(iq.zero_point + np.ceil(t.astype(np.float64) / iq.scale), -128, 128).astype(np.int16)
            q.add_node("binarize_s8", n.name, [x, q.add_const(f"{n.name}_thresh", tq)], [pname], channels=c,
                       threshold="per-channel (learned)" if np.any(t != 0) else "zero (plain sign)")
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
            extra = []
            if fmt.startswith(("exp", "pow2-")):
                wf = w if op == "dense_s8" else (w.transpose(0, 2, 3, 1) if op == "conv2d_s8" else w[:, 0])
                if fmt.startswith("exp"):
                    bits = int(fmt[3:])
                    wk, cb, bq, mult, shift, ws, base, p = _exp_layer(n, wf, b, iq.scale, oq.scale, bits,
                                                                      per_channel)
                    op = op.replace("_s8", "_expcb")
                    extra = [("codebook", cb)]
                    attrs.update(bits=bits, wshape=tuple(wf.shape), codebook_shift=p, w_scale=ws.tolist(),
                                 w_base=base.tolist(), codebook_rows=int(cb.shape[0]), weight_format=fmt)
                else:
                    bits = int(fmt[5:])
                    wk, bq, mult, shift, top, ws, levels = _pow2_layer(n, wf, b, iq.scale, oq.scale, bits,
                                                                       per_channel)
                    op = op.replace("_s8", "_exp")
                    attrs.update(bits=bits, top=top, wshape=tuple(wf.shape), exp_levels=levels,
                                 w_scale=ws.tolist(), weight_format=fmt)
            op, warrays = _sparse_layer(op, wk, attrs) if fmt == "sparse" else (op, [("w", wk)] + extra)
            wts = [q.add_const(f"{pre}_{k}", np.ascontiguousarray(v)) for k, v in warrays]
            q.tensors[wts[0]].quant = QParams(ws, 0, 0)
            ins = [x, *wts, q.add_const(f"{pre}_bias", bq), q.add_const(f"{pre}_mult", mult),
                   q.add_const(f"{pre}_shift", shift)]
            q.add_node(op, n.name, ins, [final], **attrs)
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


# ---- element-wise ops, lookup tables, concat / slice / pad / prelu ----------------------------------------------
# Ops whose output clamp takes a following ReLU / Clip (fuse_output); a relu / clip after them is not a table.
FUSES_CLAMP = ("conv2d", "dense", "add", "sub", "sum", "mul")


def _lut_nary():
    from ..pointwise import BINARY
    return tuple(BINARY)


def _is_scalar(g, t):
    d = g.tensors[t].data
    return d is not None and d.size == 1


class PointwiseRegion:
    """Element-wise float ops that together compute y = f(x) of one activation x (each op: a function of
    pointwise.UNARY, or add / sub / mul of tensors of the region or scalar constants): one int8 lookup table."""

    def __init__(self, x, nodes, exit_tensor):
        self.x, self.nodes, self.exit = x, nodes, exit_tensor

    def evaluate(self, g, xs):
        """f on the float64 array xs, through the float dialect's own functions."""
        from ..pointwise import BINARY, apply

        env = {self.x: np.asarray(xs, np.float64)}
        for n in self.nodes:
            vals = [env[t] if t in env else np.float64(g.const(t).reshape(())) for t in n.inputs]
            with np.errstate(all="ignore"):
                env[n.outputs[0]] = BINARY[n.op](*vals) if n.op in BINARY else apply(n.op, vals[0], n.attrs)
        return env[self.exit]

    def describe(self, g):
        from ..pointwise import describe

        text = {self.x: "x"}
        for n in self.nodes:
            args = [text.get(t) or f"{float(g.const(t).reshape(())):.6g}" for t in n.inputs]
            name = describe(n.op, n.attrs) if n.op not in _lut_nary() else n.op
            text[n.outputs[0]] = f"{name}({', '.join(args)})" if len(args) > 1 or n.op in _lut_nary() \
                else (f"{name}({args[0]})" if "(" not in name else name.replace("(", f"({args[0]}, ", 1))
        return text[self.exit]

    def fixed_output(self):
        """TFLite's fixed output quantization of a lone sigmoid / tanh (and hardsigmoid, on sigmoid's range)."""
        from ..pointwise import UNARY

        if len(self.nodes) == 1 and self.nodes[0].op in UNARY and UNARY[self.nodes[0].op][2] is not None:
            return UNARY[self.nodes[0].op][2]
        return None


def pointwise_regions(g: Graph) -> dict:
    """Exit node name -> :class:`PointwiseRegion`: maximal sets of element-wise ops computing a function of one
    activation, grown from each op in order; a set whose intermediate values are used outside it falls back to
    its first op alone. ReLU / Clip alone stay clamps (exact, in the input's scale), and one right after a conv,
    dense, add or mul is fused into that op's output clamp instead."""
    from ..pointwise import UNARY

    cons = {}
    for n in g.nodes:
        for t in n.inputs:
            cons.setdefault(t, []).append(n)
    claimed, regions = set(), {}

    def operands(n, inside):
        """n's activation inputs if n can join a region whose tensors are ``inside``, else None."""
        acts = [t for t in n.inputs if not g.tensors[t].is_const]
        if not acts or not all(t in inside for t in acts):
            return None
        if n.op in UNARY and len(n.inputs) == 1:
            return acts
        if n.op in _lut_nary() and all(t in inside or _is_scalar(g, t) for t in n.inputs):
            return acts
        return None

    def fused_clamp(n):
        if n.op not in ("relu", "clip"):
            return False
        p = g.producer(n.inputs[0])
        return p is not None and p.name not in claimed and p.op in FUSES_CLAMP and \
            _fused_activation(g, p)[0] is n

    for seed in g.nodes:
        if seed.name in claimed or fused_clamp(seed):
            continue
        acts = [t for t in seed.inputs if not g.tensors[t].is_const]
        if len(set(acts)) != 1 or operands(seed, set(acts)) is None:
            continue
        x = acts[0]
        members, inside = [seed], {x, seed.outputs[0]}
        grew = True
        while grew:  # absorb every element-wise op that reads only values of the region (x included)
            grew = False
            for n in g.nodes:
                if n.name in claimed or n in members:
                    continue
                if operands(n, inside) is not None:
                    members.append(n)
                    inside.add(n.outputs[0])
                    grew = True
        order = {n.name: i for i, n in enumerate(g.nodes)}
        members.sort(key=lambda n: order[n.name])
        names = {m.name for m in members}
        exits = [m.outputs[0] for m in members if m.outputs[0] in g.outputs
                 or any(c.name not in names for c in cons.get(m.outputs[0], []))]
        if len(exits) != 1:
            members = [seed]
            exits = [seed.outputs[0]]
        if all(m.op in ("relu", "clip") for m in members):
            continue
        for m in members:
            claimed.add(m.name)
        exit_node = next(m for m in members if m.outputs[0] == exits[0])
        regions[exit_node.name] = PointwiseRegion(x, [m for m in members if order[m.name] <= order[exit_node.name]],
                                                  exits[0])
    return regions


def build_lut(region: PointwiseRegion, g: Graph, iq: QParams, oq: QParams):
    """The 256-entry int8 table of ``region``: entry q + 128 = clamp(round(f(iq.scale (q - iq.zp)) / oq.scale)
    + oq.zp), the correctly rounded output (nearest, ties to even) of the float function at every int8 input.
    Inputs where f is undefined (NaN, e.g. sqrt below 0, which calibration never saw) map to real 0; +-inf to the
    int8 bounds. Returns (table, number of undefined inputs)."""
    xs = dequantize_value(np.arange(-128, 128), iq)
    y = np.asarray(region.evaluate(g, xs), np.float64)
    undefined = int(np.count_nonzero(np.isnan(y)))
    y = np.nan_to_num(y, nan=0.0, posinf=1e30, neginf=-1e30)
    return quantize_value(y, oq), undefined


def _nhwc_axis(axis: int, rank: int) -> int:
    return {1: 3, 2: 1, 3: 2}[axis] if rank == 4 else axis


def _const_operand(ctx, n, t, rank):
    """A float constant operand of an element-wise op as an int8 tensor (asymmetric per-tensor, min-max), in NHWC,
    broadcastable to the output."""
    c = np.asarray(ctx.g.const(t), np.float64)
    c = c.reshape((1,) * (rank - c.ndim) + c.shape)
    if rank == 4:
        c = c.transpose(0, 2, 3, 1)
    cq = activation_qparams(c.min(), c.max())
    name = ctx.q.add_const(ctx.q.fresh(f"{n.name}_const"), quantize_value(c, cq))
    ctx.q.tensors[name].quant = cq
    ctx.qp[name] = cq
    return name


def _operands(ctx, n):
    rank = len(ctx.g.tensors[n.outputs[0]].shape)
    return [_const_operand(ctx, n, t, rank) if ctx.g.tensors[t].is_const else ctx.name_of(t) for t in n.inputs]


def _lower_add(ctx, n):
    """add / sub / sum: TFLite ADD / SUB, n-ary: inputs to twice the largest input scale with a left shift
    (20 bits, fewer for more than 16 inputs so the int32 sum cannot overflow), summed with signs, requantized."""
    act, lo, hi, final, oq = ctx.fuse_output(n)
    ins = _operands(ctx, n)
    qs = [ctx.qp[t] for t in ins]
    twice = 2 * max(float(v.scale) for v in qs)
    ls = ADD_LEFT_SHIFT
    while len(ins) * 255 * (1 << (ls - 1)) + len(ins) >= 2**31:
        ls -= 1
    ms = [quantize_multiplier(float(v.scale) / twice) for v in qs]
    mo, so = quantize_multiplier(twice / ((1 << ls) * oq.scale))
    signs = [1, -1] if n.op == "sub" else [1] * len(ins)
    amin, amax = _clamp_bounds(oq, lo, hi)
    ctx.q.add_node("add_s8", n.name, ins, [final], zps=[v.zero_point for v in qs], mults=[m for m, _ in ms],
                   shifts=[s for _, s in ms], signs=signs, left_shift=ls, out_mult=mo, out_shift=so,
                   out_zp=oq.zero_point, act_min=amin, act_max=amax, float_op=n.op,
                   fused_activation=act.op if act is not None else None)


def _lower_mul(ctx, n):
    """mul: TFLite MUL, y = requantize((a - a_zp)(b - b_zp), s_a s_b / s_y) + y_zp, broadcasting."""
    act, lo, hi, final, oq = ctx.fuse_output(n)
    a, b = _operands(ctx, n)
    qa, qb = ctx.qp[a], ctx.qp[b]
    m, s = quantize_multiplier(float(qa.scale) * float(qb.scale) / oq.scale)
    amin, amax = _clamp_bounds(oq, lo, hi)
    ctx.q.add_node("mul_s8", n.name, [a, b], [final], a_zp=qa.zero_point, b_zp=qb.zero_point, out_mult=m,
                   out_shift=s, out_zp=oq.zero_point, act_min=amin, act_max=amax,
                   fused_activation=act.op if act is not None else None)


def _rescale_attrs(src: QParams, dst: QParams):
    """(identity, mult, shift) of TFLite's int8 -> int8 requantization from ``src`` to ``dst``."""
    if float(src.scale) == float(dst.scale) and src.zero_point == dst.zero_point:
        return True, 0, 0
    m, s = quantize_multiplier(float(src.scale) / float(dst.scale))
    return False, m, s


def _lower_concat(ctx, n):
    """concat: output scale from calibration; producers that set their own output scale adopted it already
    (see _share_concat_scales), so their inputs pass unchanged; the others are requantized to it."""
    out = n.outputs[0]
    rank = len(ctx.g.tensors[out].shape)
    oq = activation_qparams(*ctx.ranges[out])
    ctx.add_act(out, ctx.g.tensors[out].shape, oq)
    ins = [ctx.name_of(t) for t in n.inputs]
    res = [_rescale_attrs(ctx.qp[t], oq) for t in ins]
    ctx.q.add_node("concat_s8", n.name, ins, [out], axis=_nhwc_axis(n.attrs["axis"], rank),
                   zps=[ctx.qp[t].zero_point for t in ins], mults=[m for _, m, _ in res],
                   shifts=[s for _, _, s in res], identity=[i for i, _, _ in res], out_zp=oq.zero_point)


def _lower_slice(ctx, n):
    """slice: keeps the input's scale, unless it feeds a concat whose scale it adopted (then it requantizes)."""
    x, out = ctx.name_of(n.inputs[0]), n.outputs[0]
    rank = len(ctx.g.tensors[out].shape)
    iq = ctx.qp[x]
    oq = activation_qparams(*ctx.ranges[out]) if out in ctx.adopted else iq
    ctx.add_act(out, ctx.g.tensors[out].shape, oq)
    same, m, s = _rescale_attrs(iq, oq)
    a = n.attrs
    ctx.q.add_node("slice_s8", n.name, [x], [out], axis=_nhwc_axis(a["axis"], rank), start=a["start"],
                   end=a["end"], step=a.get("step", 1), identity=same, in_zp=iq.zero_point, mult=m, shift=s,
                   out_zp=oq.zero_point)


def _lower_pad(ctx, n):
    """pad: the output keeps the input's scale and zero point (TFLite PAD); the pad value is quantized in them
    (the input's calibrated range was widened to include it where the input's producer sets its own scale)."""
    x, out = ctx.name_of(n.inputs[0]), n.outputs[0]
    iq = ctx.qp[x]
    ctx.add_act(out, ctx.g.tensors[out].shape, iq)
    value = float(n.attrs.get("value", 0.0))
    vq = int(quantize_value(value, iq))
    t, l, b, r = n.attrs["pads"]
    ctx.q.add_node("pad_s8", n.name, [x], [out], pads=(t, l, b, r), channel_pads=tuple(n.attrs["channel_pads"]),
                   value=vq, float_value=value, value_error=abs(float(dequantize_value(vq, iq)) - value))


def _lower_prelu(ctx, n):
    """prelu: TFLite PRELU, slopes int8 symmetric per-tensor, one requantization for x >= 0 (s_x / s_y) and one
    for x < 0 (s_x s_alpha / s_y)."""
    x = ctx.name_of(n.inputs[0])
    iq = ctx.qp[x]
    oq = activation_qparams(*ctx.ranges[n.outputs[0]])  # no output clamp: a following relu stays a clamp
    ctx.add_act(n.outputs[0], ctx.g.tensors[n.outputs[0]].shape, oq)
    slope = np.asarray(ctx.g.const(n.inputs[1]), np.float64).reshape(-1)
    a_scale = float(np.abs(slope).max() / 127.0) or 1.0
    aq = np.clip(np.round(slope / a_scale), -127, 127).astype(np.int8)
    alpha = ctx.q.add_const(f"{n.name}_alpha", aq)
    ctx.q.tensors[alpha].quant = QParams(a_scale, 0)
    pm, ps = quantize_multiplier(float(iq.scale) / oq.scale)
    nm, ns = quantize_multiplier(float(iq.scale) * a_scale / oq.scale)
    ctx.q.add_node("prelu_s8", n.name, [x, alpha], [n.outputs[0]], in_zp=iq.zero_point, alpha_zp=0, pos_mult=pm,
                   pos_shift=ps, neg_mult=nm, neg_shift=ns, out_zp=oq.zero_point, alpha_scale=a_scale)


def _lower_lut(ctx, n, region):
    """A pointwise region: one lut_s8 with the correctly rounded table; output scale fixed where TFLite fixes it
    (a lone sigmoid / hardsigmoid: 1/256, -128; tanh: 1/128, 0), else calibrated (min-max)."""
    x, out = ctx.name_of(region.x), region.exit
    iq = ctx.qp[x]
    fixed = region.fixed_output()
    oq = QParams(*fixed) if fixed else activation_qparams(*ctx.ranges[out])
    ctx.add_act(out, ctx.g.tensors[out].shape, oq)
    table, undefined = build_lut(region, ctx.g, iq, oq)
    name = ctx.q.add_const(f"{n.name}_table", table)
    ctx.q.add_node("lut_s8", n.name, [x, name], [out], function=region.describe(ctx.g),
                   fused_nodes=[m.name for m in region.nodes],
                   output_quant=(f"fixed: scale 1/{round(1 / fixed[0])}, zero point {fixed[1]} (as TFLite)" if fixed
                                 else "calibrated (min-max)"), undefined_inputs=undefined)


LOWERING = {"add": _lower_add, "sub": _lower_add, "sum": _lower_add, "mul": _lower_mul, "concat": _lower_concat,
            "slice": _lower_slice, "pad": _lower_pad, "prelu": _lower_prelu}


def _adjust_ranges(g: Graph, ranges: dict, regions: dict) -> set:
    """Before quantizing: widen a pad's input range to include the pad value; give every concat input whose
    producer sets its own output scale (conv, dense, add, mul, a calibrated table, prelu, slice, another concat)
    the concat's range, so it is produced in the concat's scale and passes unchanged (TFLite's converter does the
    same). Returns the tensors that adopted a concat's range."""
    for n in g.nodes:
        if n.op == "pad":
            v = float(n.attrs.get("value", 0.0))
            for t in (n.inputs[0], n.outputs[0]):
                lo, hi = ranges[t]
                ranges[t] = (min(lo, v), max(hi, v))

    def sets_scale(t):
        p = g.producer(t)
        if p is None:
            return False
        if p.name in regions:
            return regions[p.name].fixed_output() is None
        if p.op in ("relu", "clip"):
            pp = g.producer(p.inputs[0])
            return pp is not None and pp.op in FUSES_CLAMP and _fused_activation(g, pp)[0] is p
        return p.op in FUSES_CLAMP + ("concat", "prelu", "slice")

    adopted = set()
    for n in reversed(g.nodes):
        if n.op == "concat":
            for t in n.inputs:
                if t not in adopted and t not in g.outputs and sets_scale(t):
                    ranges[t] = ranges[n.outputs[0]]
                    adopted.add(t)
    return adopted
