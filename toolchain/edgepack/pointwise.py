"""The element-wise float functions of the float dialect, one table: op -> (function, attribute defaults, fixed
int8 output quantization or None).

Each function maps a float64 numpy array to a float64 array of the same shape; the float executor
(reference/float_exec.py) runs them, and the quantizer (compress/quantize.py) evaluates them on the 256 values
an int8 input can take to build the lookup table of an int8 in / int8 out pointwise op (reference ``lut_s8``).

    sigmoid(x)            = 1 / (1 + exp(-x))
    tanh(x)
    hardsigmoid(x; a, b)  = clip(a x + b, 0, 1)              (torch: a = 1/6, b = 1/2; ONNX default a = 0.2)
    hardswish(x)          = x clip(x + 3, 0, 6) / 6
    silu(x)               = x sigmoid(x)                      (Swish with beta = 1)
    leaky_relu(x; alpha)  = x if x >= 0 else alpha x
    elu(x; alpha)         = x if x > 0 else alpha (exp(x) - 1)
    selu(x)               = 1.0507... elu(x; 1.6732...)
    celu(x; alpha)        = max(0, x) + min(0, alpha (exp(x / alpha) - 1))
    gelu(x; approximate)  = x Phi(x) = x (1 + erf(x / sqrt 2)) / 2                                 ("none")
                          = x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2                     ("tanh")
    erf(x), exp(x), neg(x) = -x, abs(x), softplus(x; beta, threshold) = log(1 + exp(beta x)) / beta
                          (x where beta x > threshold), mish(x) = x tanh(softplus(x)),
    pow(x; exponent)      = x ** exponent (a constant exponent), sqrt(x), reciprocal(x) = 1 / x, log(x)
    relu(x) = max(x, 0); clip(x; min, max)

Fixed output quantization: where TensorFlow Lite fixes the int8 output of an op, edgepack does too (LOGISTIC:
scale 1/256, zero point -128; TANH: scale 1/128, zero point 0); hardsigmoid has sigmoid's range [0, 1] and
gets sigmoid's. Every other function's output is calibrated (min-max over the calibration batch).
"""

from __future__ import annotations

import math

import numpy as np

_SQRT2 = math.sqrt(2.0)
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x) if np.size(x) else np.asarray(x, np.float64)


def _sigmoid(x):
    # exp of a negative argument only: no overflow warnings for large |x|
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(x, beta=1.0, threshold=20.0):
    bx = beta * x
    return np.where(bx > threshold, x, np.logaddexp(0.0, bx) / beta)


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + _erf(x / _SQRT2))


def _elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def _clip(x, min=None, max=None):  # noqa: A002 (attribute names of the float dialect)
    return np.clip(x, -np.inf if min is None else min, np.inf if max is None else max)


def _pow(x, exponent=1.0):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.power(x, exponent)


def _checked(f):
    """Functions that can leave the reals (sqrt of a negative, 1/0): NaN and inf are errors at build time."""
    def g(x, **a):
        with np.errstate(invalid="ignore", divide="ignore"):
            return f(x, **a)
    return g


# op -> (function(x, **attrs), attribute defaults, fixed output (scale, zero point) or None)
UNARY = {
    "relu": (lambda x: np.maximum(x, 0.0), {}, None),
    "clip": (_clip, {"min": None, "max": None}, None),
    "sigmoid": (_sigmoid, {}, (1.0 / 256, -128)),
    "tanh": (np.tanh, {}, (1.0 / 128, 0)),
    "hardsigmoid": (lambda x, alpha=1 / 6, beta=0.5: np.clip(alpha * x + beta, 0.0, 1.0),
                    {"alpha": 1 / 6, "beta": 0.5}, (1.0 / 256, -128)),
    "hardswish": (lambda x: x * np.clip(x + 3.0, 0.0, 6.0) / 6.0, {}, None),
    "silu": (lambda x: x * _sigmoid(x), {}, None),
    "leaky_relu": (lambda x, alpha=0.01: np.where(x >= 0, x, alpha * x), {"alpha": 0.01}, None),
    "elu": (_elu, {"alpha": 1.0}, None),
    "selu": (lambda x: _SELU_SCALE * _elu(x, _SELU_ALPHA), {}, None),
    "celu": (lambda x, alpha=1.0: np.maximum(x, 0.0) + np.minimum(0.0, alpha * np.expm1(
        np.minimum(x, 0.0) / alpha)), {"alpha": 1.0}, None),
    "gelu": (_gelu, {"approximate": "none"}, None),
    "erf": (_erf, {}, None),
    "exp": (_checked(np.exp), {}, None),
    "neg": (np.negative, {}, None),
    "abs": (np.abs, {}, None),
    "softplus": (_softplus, {"beta": 1.0, "threshold": 20.0}, None),
    "mish": (lambda x: x * np.tanh(_softplus(x)), {}, None),
    "pow": (_pow, {"exponent": 1.0}, None),
    "log": (_checked(np.log), {}, None),
    "sqrt": (_checked(np.sqrt), {}, None),
    "reciprocal": (_checked(np.reciprocal), {}, None),
}

# n-ary element-wise ops of the float dialect (numpy broadcasting, NCHW); comparisons give 1.0 / 0.0 and are
# quantized only inside a chain that ends in a real value (e.g. softplus's where(x > 20, x, log(1 + e^x))).
BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "greater": lambda a, b: np.greater(a, b).astype(np.float64),
    "less": lambda a, b: np.less(a, b).astype(np.float64),
    "greater_equal": lambda a, b: np.greater_equal(a, b).astype(np.float64),
    "less_equal": lambda a, b: np.less_equal(a, b).astype(np.float64),
    "where": lambda c, a, b: np.where(np.asarray(c) != 0, a, b),
}
COMPARISONS = ("greater", "less", "greater_equal", "less_equal", "where")


def apply(op: str, x, attrs: dict | None = None):
    """``op``'s function on ``x`` (float64), with the node's attributes (defaults filled in)."""
    fn, defaults, _ = UNARY[op]
    a = {k: (attrs or {}).get(k, v) for k, v in defaults.items()}
    return fn(np.asarray(x, np.float64), **a)


def describe(op: str, attrs: dict | None = None) -> str:
    """``sigmoid``, ``leaky_relu(alpha=0.1)``: the function and its non-default attributes, for cards."""
    _, defaults, _ = UNARY[op]
    extra = {k: (attrs or {}).get(k, v) for k, v in defaults.items()}
    shown = ", ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in extra.items()
                      if v is not None and v != defaults[k])
    return f"{op}({shown})" if shown else op
