"""ep_bconv2d_b1: binary (XNOR-popcount) NHWC convolution with binary output.

x: (1, H, W, Cw) uint32 packed input (``pack.bitplanes``: channel c at bit c % 32 of word c // 32, bit 1 = -1,
pad bits 0), C = attrs["channels"] and Cw = ceil(C / 32); w: (O, KH, KW, Cw) packed weights; thresh: (O,)
int32; y: (1, OH, OW, ceil(O / 32)) packed output where bit o is 1 (-1) when dot[o] < thresh[o]; the pad bits
of the last output word are 0.

For one output pixel the window's valid taps form a rectangle [ky_lo, ky_hi) x [kx_lo, kx_hi) (taps in the
zero padding contribute 0), computed once per pixel, so the tap loops need no per-tap bounds checks. The
innermost loop runs over the Cw words of a tap: popsum += popcount(x ^ w); then
dot = (valid taps) * C - 2 * popsum (pad bits are 0 in x and w, so they never count). Where consecutive taps
are contiguous in memory (dilation 1 along the width) the kx and word loops are one loop over
(kx_hi - kx_lo) * Cw words; a window covering whole rows (KW == W, no horizontal padding, dilation 1: a binary
dense layer over a flattened input) is one loop over all its words.

``ep_popcount32`` comes from firmware/runtime/ep_kernels.h.
"""

from tvm.script import tirx as T

PARAMS = ["x", "w", "thresh", "y"]
CONST = {"x", "w", "thresh"}


def _pc(v):
    return T.call_extern("int32", "ep_popcount32", v)


def geometry(attrs, shapes, op):
    """Static facts of a binary convolution, checked against the shapes: a dict of Python ints / bools."""
    _, H, W, CW = shapes["x"]
    O, KH, KW, CWW = shapes["w"]
    _, OH, OW, _ = shapes["y"]
    C = int(attrs["channels"])
    if not 0 < C <= 32 * CW or CW != (C + 31) // 32:
        raise ValueError(f"{op}: {C} channels need {(C + 31) // 32} words per pixel, input has {CW}")
    if CWW != CW:
        raise ValueError(f"{op}: weights have {CWW} words per tap, input has {CW}")
    (SH, SW), (PT, PL, PB, PR), (DH, DW) = attrs["strides"], attrs["pads"], attrs["dilations"]
    oh = (H + PT + PB - DH * (KH - 1) - 1) // SH + 1
    ow = (W + PL + PR - DW * (KW - 1) - 1) // SW + 1
    if (oh, ow) != (OH, OW):
        raise ValueError(f"{op}: output {OH}x{OW} does not match the window arithmetic ({oh}x{ow})")
    g = dict(H=H, W=W, CW=CW, C=C, O=O, KH=KH, KW=KW, OH=OH, OW=OW, SH=SH, SW=SW, PT=PT, PL=PL, DH=DH, DW=DW)
    # Which ends of the tap range can be cut by padding for some output pixel (static).
    g["clip_t"] = PT > 0
    g["clip_b"] = (OH - 1) * SH - PT + (KH - 1) * DH >= H
    g["clip_l"] = PL > 0
    g["clip_r"] = (OW - 1) * SW - PL + (KW - 1) * DW >= W
    g["rows"] = (KW == W and not g["clip_l"] and not g["clip_r"] and (DW == 1 or KW == 1)
                 and (DH == 1 or KH == 1))
    return g


def _lo(o, S, P, D, clip):
    """First tap k of the window with o * S - P + k * D >= 0."""
    if not clip:
        return 0
    n = P - o * S
    return T.Select(n > 0, n if D == 1 else T.truncdiv(n + (D - 1), D), 0)


def _hi(o, S, P, D, N, K, clip):
    """One past the last tap k of the window with o * S - P + k * D < N."""
    if not clip:
        return K
    m = N + P - o * S
    e = m if D == 1 else T.truncdiv(m + (D - 1), D)
    return T.Select(m <= 0, 0, T.Select(e < K, e, K))


def popsum_macros(g):
    """(count, popsum) macros: count(cnt, oy, ox) sets cnt[0] = valid taps * C of the pixel's window;
    popsum(X, Wt, pop, oy, ox, oc) sets pop[0] = sum over the valid taps of popcount(x ^ w[oc])."""
    H, W, CW, C, KH, KW = g["H"], g["W"], g["CW"], g["C"], g["KH"], g["KW"]
    SH, SW, PT, PL, DH, DW = g["SH"], g["SW"], g["PT"], g["PL"], g["DH"], g["DW"]
    clip_t, clip_b, clip_l, clip_r = g["clip_t"], g["clip_b"], g["clip_l"], g["clip_r"]
    clip_v, clip_h = clip_t or clip_b, clip_l or clip_r
    rows_fused, w_fused = g["rows"], DW == 1 or KW == 1

    def ky_lo(oy):
        return _lo(oy, SH, PT, DH, clip_t)

    def ky_hi(oy):
        return _hi(oy, SH, PT, DH, H, KH, clip_b)

    def kx_lo(ox):
        return _lo(ox, SW, PL, DW, clip_l)

    def kx_hi(ox):
        return _hi(ox, SW, PL, DW, W, KW, clip_r)

    def extent(lo, hi, clip):
        return T.Select(hi > lo, hi - lo, 0) if clip else hi - lo

    @T.macro
    def count(cnt, oy, ox):
        if clip_v or clip_h:
            cnt[0] = extent(ky_lo(oy), ky_hi(oy), clip_v) * extent(kx_lo(ox), kx_hi(ox), clip_h) * C
        else:
            cnt[0] = KH * KW * C

    @T.macro
    def popsum(X, Wt, pop, oy, ox, oc):
        pop[0] = 0
        if rows_fused:  # the valid rows of the window are whole, contiguous input rows
            for j in T.serial(ky_lo(oy) * (W * CW), ky_hi(oy) * (W * CW)):
                pop[0] = pop[0] + _pc(X[(oy * SH - PT) * (W * CW) + j] ^ Wt[oc * (KH * W * CW) + j])
        elif w_fused:  # a window row's valid taps are contiguous words in x and w
            for ky in T.serial(ky_lo(oy), ky_hi(oy)):
                for j in T.serial(kx_lo(ox) * CW, kx_hi(ox) * CW):
                    pop[0] = pop[0] + _pc(X[((oy * SH - PT + ky * DH) * W + ox * SW - PL) * CW + j]
                                          ^ Wt[(oc * KH + ky) * (KW * CW) + j])
        else:
            for ky in T.serial(ky_lo(oy), ky_hi(oy)):
                for kx in T.serial(kx_lo(ox), kx_hi(ox)):
                    for j in range(CW):
                        pop[0] = pop[0] + _pc(X[((oy * SH - PT + ky * DH) * W + ox * SW - PL + kx * DW) * CW + j]
                                              ^ Wt[((oc * KH + ky) * KW + kx) * CW + j])

    return count, popsum


def template(attrs, shapes):
    g = geometry(attrs, shapes, "bconv2d_b1")
    H, W, CW, O, KH, KW, OH, OW = (g[k] for k in ("H", "W", "CW", "O", "KH", "KW", "OH", "OW"))
    OWD = (O + 31) // 32
    if tuple(shapes["thresh"]) != (O,):
        raise ValueError(f"bconv2d_b1: thresholds {shapes['thresh']} for {O} output channels")
    if shapes["y"][3] != OWD:
        raise ValueError(f"bconv2d_b1: {O} output channels need {OWD} words per pixel, y has {shapes['y'][3]}")
    FULL, TAIL = O // 32, O % 32
    count, popsum = popsum_macros(g)

    @T.macro
    def out_word(X, Wt, Th, Y, cnt, pop, word, oy, ox, ow, nbits):
        word[0] = T.uint32(0)
        for b in range(nbits):
            popsum(X, Wt, pop, oy, ox, ow * 32 + b)
            word[0] = word[0] | (T.Cast("uint32", cnt[0] - 2 * pop[0] < Th[ow * 32 + b]) << T.Cast("uint32", b))
        Y[(oy * OW + ox) * OWD + ow] = word[0]

    @T.prim_func
    def kernel(x: T.handle("uint32"), w: T.handle("uint32"), thresh: T.handle("int32"), y: T.handle("uint32")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * CW,), "uint32", data=x)
        Wt = T.decl_buffer((O * KH * KW * CW,), "uint32", data=w)
        Th = T.decl_buffer((O,), "int32", data=thresh)
        Y = T.decl_buffer((OH * OW * OWD,), "uint32", data=y)
        cnt = T.alloc_buffer((1,), "int32")
        pop = T.alloc_buffer((1,), "int32")
        word = T.alloc_buffer((1,), "uint32")
        for oy, ox in T.grid(OH, OW):
            count(cnt, oy, ox)
            for ow in range(FULL):
                out_word(X, Wt, Th, Y, cnt, pop, word, oy, ox, ow, 32)
            if TAIL > 0:
                out_word(X, Wt, Th, Y, cnt, pop, word, oy, ox, FULL, TAIL)

    return kernel
