"""TIR shared by the binary (XNOR-popcount) convolution kernels: window geometry and a bit-sliced popcount.

Layout (reference/ops_binary.py): x is (1, H, W, Cw) uint32 words, channel c at bit c % 32 of word c // 32, bit 1
= -1, pad bits 0; w is (O, KH, KW, Cw) in the same layout. For one output pixel and channel, the dot product over
the window's valid taps is  cnt - 2 * popsum,  cnt = (valid taps) * C and popsum = sum of popcount(x ^ w) over
their words (pad bits are 0 in x and w, so they never count; taps in the zero padding contribute 0).

Windows are static: along each axis the output coordinates are split (at template time) into runs whose window
is cut the same way by the padding, so every run of output pixels has a window of known taps, count and word
offsets (relative to the pixel's first word), and nothing checks bounds per tap or per pixel.

Popcount. One word costs ~12 instructions the SWAR way (ep_popcount32). Here the XOR words of a window go into
a carry-save (Harley-Seal) counter instead: a full adder (5 bit operations: sum a^b^c, carry maj(a,b,c)) turns
three words of one weight into one word of that weight and one of twice it, so n words become one bit-plane
per power of two (ceil(log2(n + 1)) planes) for about 5 operations per word. The planes are then counted once:
per-nibble counts (ep_nibpop, 5 instructions a plane), planes of weights w and 2w combined per nibble (<= 12),
bytes (ep_nibsum), all planes of weights 1..16 (relative) summed per byte (<= 8 * 31 = 248), and one horizontal
byte sum (ep_bytesum_acc: one USADA8 on Arm cores with the DSP extension). Two words that follow each other in
x and in w (the words of a tap, consecutive taps of a row) are loaded as pairs (ep_xor2: an LDRD each on
M-profile cores). For the 3x3, 64-channel window (18 words) that is ~150 instructions on Cortex-M7, ~8.3 a
word, against ~18 for ep_popcount32 and its loads.

Windows of up to UNROLL words are straight-line code (within STATIC_BUDGET words for the whole kernel, the
most frequent windows first); the others loop over rows, taps or chunks of consecutive words, the counter's
planes (weights 1..TOP) carried across iterations in a small scratch array and heavier carries flushed into
an int32 sum as they appear.

Temporaries are elements of local arrays with constant indices (Scratch), which the C compiler keeps in
registers: T.Bind variables do not survive TVM's CSE (it leaves them unused, an error under -Werror).
"""

from __future__ import annotations

from tvm.script import tirx as T

U32 = "uint32"
UNROLL = 32  # most words of one straight-line counter update (one loop body or one static window)
STATIC_BUDGET = 160  # most words of straight-line windows in one kernel, all runs together (code size)
TOP = 16  # highest plane weight kept in a loop-carried counter; carries above it are flushed
ACC_TOP = 5  # log2(2 * TOP)
TMP = 320  # uint32 scratch values of one window (Scratch)


def u32(v: int):
    return T.uint32(v & 0xFFFFFFFF)


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
    g["ygroups"] = axis_groups(OH, SH, PT, DH, H, KH)
    g["xgroups"] = axis_groups(OW, SW, PL, DW, W, KW)
    return g


def axis_groups(n_out, s, p, d, n_in, k):
    """Runs of output coordinates along one axis whose windows keep the same taps: [(o0, o1, k0, k1)], taps
    k in [k0, k1) are the ones with 0 <= o * s - p + k * d < n_in (k1 == k0: the window misses the input)."""
    groups = []
    for o in range(n_out):
        lo = next((t for t in range(k) if o * s - p + t * d >= 0), k)
        hi = lo
        while hi < k and o * s - p + hi * d < n_in:
            hi += 1
        if groups and groups[-1][1] == o and groups[-1][2:] == (lo, hi):
            groups[-1] = (groups[-1][0], o + 1, lo, hi)
        else:
            groups.append((o, o + 1, lo, hi))
    return groups


# --- scratch values ---------------------------------------------------------------------------------------

class Scratch:
    """Straight-line temporaries as elements of one local array (see the module docstring); ``reset()``
    recycles the indices (a window's code is emitted before the next)."""

    def __init__(self, buf, size):
        self.buf, self.size, self.n = buf, size, 0

    def reset(self):
        self.n = 0

    def pair(self, xp, wp):
        """Two new temporaries set by ep_xor2 from the word pairs at xp, wp: (lo, hi) loads."""
        i = self.n
        self.n += 2
        if self.n > self.size:
            raise RuntimeError("binary kernel: scratch exhausted")
        T.evaluate(T.call_extern("int32", "ep_xor2", T.address_of(self.buf[i]), T.address_of(self.buf[i + 1]),
                                 xp, wp))
        return self.buf[i], self.buf[i + 1]

    def __call__(self, value):
        if self.n >= self.size:
            raise RuntimeError("binary kernel: scratch exhausted")
        i = self.n
        self.n += 1
        T.buffer_store(self.buf, value, [i])
        return self.buf[i]


# --- the bit-sliced counter -------------------------------------------------------------------------------

def _nib(t, p):
    """Per-nibble popcounts of a uint32 (each nibble <= 4): ep_nibpop, 5 instructions on Thumb-2."""
    return t(T.call_extern(U32, "ep_nibpop", p))


def _bytes(t, n, nib_max):
    """Per-byte sums of the two nibbles of each byte of n (each nibble <= nib_max <= 15)."""
    if nib_max <= 7:
        return t((n + (n >> u32(4))) & u32(0x0F0F0F0F))
    return t(T.call_extern(U32, "ep_nibsum", n))


def _bytesum_acc(acc, v):
    return T.call_extern("int32", "ep_bytesum_acc", acc, v)


class Counter:
    """Carry-save counter of the popcounts of uint32 words: ``levels`` maps a weight (power of two) to its
    pending words (bound variables); three words of one weight become one of it and one of twice it."""

    def __init__(self, t, levels=None):
        self.t, self.levels = t, dict(levels or {})

    def add(self, word, weight=1):
        pend = self.levels.setdefault(weight, [])
        pend.append(word)
        if len(pend) == 3:
            a, b, c = pend
            u = self.t(a ^ b)
            self.levels[weight] = [self.t(u ^ c)]
            self.add(self.t((a & b) | (u & c)), 2 * weight)

    def add_xor(self, xv, wv):
        self.add(self.t(xv ^ wv))

    def reduce(self, top=None):
        """One word per weight (half adders on pairs). With ``top``, words of weight > top are returned (the
        caller flushes them) instead of being reduced."""
        over = []
        w = 1
        while any(k >= w for k in self.levels):
            pend = self.levels.get(w, [])
            if top is not None and w > top:
                over += [(w, p) for p in pend]
                self.levels.pop(w, None)
            elif len(pend) == 2:
                a, b = pend
                self.levels[w] = [self.t(a ^ b)]
                self.add(self.t(a & b), 2 * w)
            w *= 2
        return over

    def total(self, acc):
        """acc (int32 expression) + the count held by the planes (after reduce())."""
        planes = sorted((w, p[0]) for w, p in self.levels.items() if p)
        groups = {}
        for w, p in planes:  # groups of relative weights 1..16: a byte of the group's sum stays <= 248
            base = 1 << (5 * ((w.bit_length() - 1) // 5))
            groups.setdefault(base, []).append((w // base, p))
        for base, items in sorted(groups.items()):
            rel = dict(items)
            vec = None
            for lo in (1, 4, 16):
                a, b = rel.get(lo), rel.get(2 * lo) if lo < 16 else None
                if a is None and b is None:
                    continue
                if a is not None and b is not None:
                    n, nmax, sh = self.t(_nib(self.t, a) + (_nib(self.t, b) << u32(1))), 12, lo.bit_length() - 1
                elif a is not None:
                    n, nmax, sh = _nib(self.t, a), 4, lo.bit_length() - 1
                else:
                    n, nmax, sh = _nib(self.t, b), 4, lo.bit_length()
                bv = _bytes(self.t, n, nmax)
                term = bv if sh == 0 else (bv << u32(sh))
                vec = term if vec is None else self.t(vec + term)
            if base == 1:
                acc = _bytesum_acc(acc, vec)
            else:
                acc = acc + _bytesum_acc(T.int32(0), vec) * T.int32(base)
        return acc


# --- windows ----------------------------------------------------------------------------------------------

class Window:
    """One run of output pixels with the same window: taps ky in [ky0, ky1) x kx in [kx0, kx1)."""

    def __init__(self, g, ky0, ky1, kx0, kx1):
        self.g, self.ky0, self.ky1, self.kx0, self.kx1 = g, ky0, ky1, kx0, kx1
        self.rows, self.taps = max(ky1 - ky0, 0), max(kx1 - kx0, 0)
        self.words = self.rows * self.taps * g["CW"]
        self.cnt = self.rows * self.taps * g["C"]

    def x_off(self, ky, kx, j):
        g = self.g
        return (ky * g["DH"] * g["W"] + kx * g["DW"]) * g["CW"] + j

    def w_off(self, ky, kx, j):
        g = self.g
        return (ky * g["KW"] + kx) * g["CW"] + j

    def row_contiguous(self):
        """The taps of a window row are consecutive words in x (and always in w)."""
        return self.g["DW"] == 1 or self.taps == 1

    def all_contiguous(self):
        """The whole window is one run of consecutive words in x and in w (full-width rows: a dense layer)."""
        g = self.g
        return self.row_contiguous() and (self.rows == 1 or (g["DH"] * g["W"] == self.taps == g["KW"]))


def _add_words(c, X, Wt, words):
    """Add popcount(x ^ w) of the words [(x base, x offset, w base, w offset)] to counter c (static offsets).
    Two words that follow each other in x and in w are loaded as pairs (ep_xor2: one LDRD each on Thumb-2)."""
    i = 0
    while i < len(words):
        xb, xo, wb, wo = words[i]
        if i + 1 < len(words):
            xb2, xo2, wb2, wo2 = words[i + 1]
            if xb2 is xb and wb2 is wb and xo2 == xo + 1 and wo2 == wo + 1:
                lo, hi = c.t.pair(T.address_of(X[xb + xo]), T.address_of(Wt[wb + wo]))
                c.add(lo)
                c.add(hi)
                i += 2
                continue
        c.add_xor(X[xb + xo], Wt[wb + wo])
        i += 1


def popsum(win, X, Wt, xb, wb, sc, static):
    """Emit the popcount sum of the window of the pixel whose window starts at x word xb (w word wb): an int32
    expression. ``static``: straight-line code; otherwise loops, with the counter carried in sc.st (uint32,
    ACC_TOP) / sc.acc (int32, 1). sc: the Scratches."""
    CW, t, st, acc = win.g["CW"], sc.t, sc.st, sc.acc
    if win.words == 0:
        return T.int32(0)
    if static:
        c = Counter(t)
        _add_words(c, X, Wt, [(xb, win.x_off(ky, kx, j), wb, win.w_off(ky, kx, j))
                              for ky in range(win.ky0, win.ky1) for kx in range(win.kx0, win.kx1)
                              for j in range(CW)])
        c.reduce()
        return c.total(T.int32(0))

    # Loop-carried counter: planes 1..TOP in st, carries above TOP flushed into acc.
    for i in range(ACC_TOP):
        T.buffer_store(st, u32(0), [i])
    T.buffer_store(acc, T.int32(0), [0])

    def body(words):
        c = Counter(t, {1 << i: [t(st[i])] for i in range(ACC_TOP)})
        _add_words(c, X, Wt, words)
        over = c.reduce(top=TOP)
        for i in range(ACC_TOP):
            T.buffer_store(st, c.levels[1 << i][0], [i])
        for w, p in over:
            cc = Counter(t, {1: [p]})
            T.buffer_store(acc, acc[0] + cc.total(T.int32(0)) * T.int32(w), [0])

    def run(xo, wo, n):
        """n consecutive words from x word xo / w word wo: chunks of UNROLL words, then the rest."""
        full, rest = divmod(n, UNROLL)
        if full == 1:
            body([(xo, j, wo, j) for j in range(UNROLL)])
        elif full > 1:
            with T.serial(0, full) as ch:
                xc, wc = sc.i(xo + ch * UNROLL), sc.i(wo + ch * UNROLL)
                body([(xc, j, wc, j) for j in range(UNROLL)])
        if rest:
            body([(xo, full * UNROLL + j, wo, full * UNROLL + j) for j in range(rest)])

    if win.all_contiguous():
        run(xb + win.x_off(win.ky0, win.kx0, 0), wb + win.w_off(win.ky0, win.kx0, 0), win.words)
    else:
        def rows(fn):
            if win.rows == 1:
                fn(win.ky0)
            else:
                with T.serial(win.ky0, win.ky1) as ky:
                    fn(ky)

        def row(ky):
            if win.row_contiguous():
                run(xb + win.x_off(ky, win.kx0, 0), wb + win.w_off(ky, win.kx0, 0), win.taps * CW)
            elif win.taps * CW <= UNROLL:
                body([(xb, win.x_off(ky, kx, j), wb, win.w_off(ky, kx, j))
                      for kx in range(win.kx0, win.kx1) for j in range(CW)])
            else:
                with T.serial(win.kx0, win.kx1) as kx:
                    run(xb + win.x_off(ky, kx, 0), wb + win.w_off(ky, kx, 0), CW)

        rows(row)
    c = Counter(t, {1 << i: [t(st[i])] for i in range(ACC_TOP)})
    return c.total(acc[0])


def windows(g):
    """[(oy0, oy1, ox0, ox1, Window, static)] for every run of output pixels, the largest first deciding which
    windows are straight-line code within STATIC_BUDGET words."""
    out = []
    for oy0, oy1, ky0, ky1 in g["ygroups"]:
        for ox0, ox1, kx0, kx1 in g["xgroups"]:
            out.append([oy0, oy1, ox0, ox1, Window(g, ky0, ky1, kx0, kx1), False])
    budget = STATIC_BUDGET
    for item in sorted(out, key=lambda it: -(it[1] - it[0]) * (it[3] - it[2]) * it[4].words):
        if item[4].words <= UNROLL and item[4].words <= budget:
            item[5] = True
            budget -= item[4].words
    return [tuple(it) for it in out]


class Scratches:
    """The kernel's local arrays, declared at the top of the function (only those it uses: -Werror): ``t``
    (uint32 temporaries of a window), ``i`` (int32 word offsets of a window), ``st`` / ``acc`` (state of
    loop-carried counters, where some window loops) and the named extra pools (per-channel constants,
    per-pixel values)."""

    def __init__(self, g, **pools):
        wins = windows(g)
        words = any(w.words for *_, w, _ in wins)  # some window reads x (else x and w go unused)
        self.t = Scratch(T.alloc_buffer((TMP,), U32), TMP) if words else None
        self.i = Scratch(T.alloc_buffer((4,), "int32"), 4) if words else None
        looped = any(w.words and not static for *_, w, static in wins)
        self.st = T.alloc_buffer((ACC_TOP,), U32) if looped else None
        self.acc = T.alloc_buffer((1,), "int32") if looped else None
        for name, (n, dtype) in pools.items():
            setattr(self, name, Scratch(T.alloc_buffer((n,), dtype), n) if n else None)

    def popsum(self, win, X, Wt, oy, ox, wb, static):
        """The window's popcount sum for pixel (oy, ox) and the output channel whose weights start at word
        wb (an int32 expression)."""
        if not win.words:
            return T.int32(0)
        self.t.reset()
        self.i.reset()
        xb = self.i(x_base(win.g, oy, ox))
        wp = self.i(T.call_extern("int32", "ep_pin", wb))  # see ep_pin in ep_kernels.h
        return popsum(win, X, Wt, xb, wp, self, static)


def pixel_loops(g, fn):
    """Call fn(oy, ox, window, static) inside loops over every run of output pixels (runs of one pixel get
    no loop)."""
    def loop(a, b, inner):
        if b - a == 1:
            inner(T.int32(a))
        else:
            with T.serial(a, b) as v:
                inner(v)

    wins = windows(g)
    for oy0, oy1, _, _ in g["ygroups"]:
        row = [it for it in wins if it[0] == oy0]

        def yfn(oy, row=row):
            for _, _, ox0, ox1, win, static in row:
                loop(ox0, ox1, lambda ox, win=win, static=static: fn(oy, ox, win, static))
        loop(oy0, oy1, yfn)


def x_base(g, oy, ox):
    """Index of the first word of the (possibly padded-out) window origin of pixel (oy, ox) in x."""
    return ((oy * g["SH"] - g["PT"]) * g["W"] + ox * g["SW"] - g["PL"]) * g["CW"]
