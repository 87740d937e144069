"""ep_bconv2d_b1: binary (XNOR-popcount) NHWC convolution with binary output.

x: (1, H, W, Cw) uint32 packed input (``pack.bitplanes``: channel c at bit c % 32 of word c // 32, bit 1 = -1,
pad bits 0), C = attrs["channels"] and Cw = ceil(C / 32); w: (O, KH, KW, Cw) packed weights; thresh: (O,)
int32; y: (1, OH, OW, ceil(O / 32)) packed output where bit o is 1 (-1) when dot[o] < thresh[o]; the pad bits
of the last output word are 0.

dot = (valid taps) * C - 2 * popsum, popsum = sum over the valid taps' words of popcount(x ^ w): the windows and
the bit-sliced (carry-save) popcount are those of ``binary_common``. Output channels are the outer loop (a
channel's threshold and weights stay put while its pixels are computed); y is cleared first and each pixel's
word collects its channel bits.
"""

from tvm.script import tirx as T

from .binary_common import U32, Scratches, geometry, pixel_loops

PARAMS = ["x", "w", "thresh", "y"]
CONST = {"x", "w", "thresh"}


def template(attrs, shapes):
    g = geometry(attrs, shapes, "bconv2d_b1")
    H, W, CW, O, KH, KW, OH, OW = (g[k] for k in ("H", "W", "CW", "O", "KH", "KW", "OH", "OW"))
    OWD = (O + 31) // 32
    if tuple(shapes["thresh"]) != (O,):
        raise ValueError(f"bconv2d_b1: thresholds {shapes['thresh']} for {O} output channels")
    if shapes["y"][3] != OWD:
        raise ValueError(f"bconv2d_b1: {O} output channels need {OWD} words per pixel, y has {shapes['y'][3]}")

    def body(X, Wt, Th, Y):
        sc = Scratches(g, k=(4, "int32"))
        k = sc.k
        with T.serial(0, OH * OW * OWD) as i:
            T.buffer_store(Y, T.uint32(0), [i])
        with T.serial(0, O) as oc:
            k.reset()
            th = k(Th[oc])
            wb = k(oc * (KH * KW * CW))
            word = k(T.truncdiv(oc, 32))
            bit = k(T.truncmod(oc, 32))

            def pixel(oy, ox, win, static):
                pop = sc.popsum(win, X, Wt, oy, ox, wb, static)
                i = (oy * OW + ox) * OWD + word
                T.buffer_store(Y, Y[i] | (T.Cast(U32, T.int32(win.cnt) - pop * 2 < th) << T.Cast(U32, bit)), [i])

            pixel_loops(g, pixel)

    @T.prim_func
    def kernel(x: T.handle("uint32"), w: T.handle("uint32"), thresh: T.handle("int32"), y: T.handle("uint32")):
        T.func_attr({"tirx.noalias": True})
        X = T.decl_buffer((H * W * CW,), "uint32", data=x)
        Wt = T.decl_buffer((O * KH * KW * CW,), "uint32", data=w)
        Th = T.decl_buffer((O,), "int32", data=thresh)
        Y = T.decl_buffer((OH * OW * OWD,), "uint32", data=y)
        body(X, Wt, Th, Y)

    return kernel
