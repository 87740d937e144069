"""One error type for everything a user can get wrong, and the readers of user data files that use it.

The CLI prints ``str(err)`` on one line and exits non-zero; it never shows a stack trace for these.
"""


class EdgepackError(Exception):
    """A user-facing failure with a one-line message that says what and where, and what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that every clean-up path SIGINT takes runs for it too."""


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"


def _sniff(path, expects: str) -> bytes:
    """The first bytes of a user's data file, or a one-line error (no such file, not a file, unreadable)."""
    from pathlib import Path

    path = Path(path)
    if not path.exists():
        raise EdgepackError(f"{path}: no such file ({expects})")
    if not path.is_file():
        raise EdgepackError(f"{path}: not a file ({expects})")
    try:
        with open(path, "rb") as f:
            return f.read(8)
    except OSError as e:
        raise EdgepackError(f"{path}: cannot read it ({e.strerror})") from None


def _np_load(path, what: str, **kw):
    """np.load without pickles; a one-line error for pickled or unreadable contents."""
    import numpy as np

    try:
        return np.load(path, allow_pickle=False, **kw)
    except ValueError as e:
        if "pickle" in str(e):
            raise EdgepackError(f"{path}: holds pickled Python objects, which edgepack never loads; save numeric "
                                f"arrays with {what}") from None
        raise EdgepackError(f"{path}: not a readable file for {what} ({str(e).splitlines()[0][:120]})") from None
    except Exception as e:
        raise EdgepackError(f"{path}: not a readable file for {what} ({str(e).splitlines()[0][:120]})") from None


def check_batch(x, path, option: str, *, batch_axis: int = 0):
    """A float batch from a user's file: real numbers (float, int or bool), at least one sample (along
    ``batch_axis``), all finite. Returns it as float32 (integers and bools convert exactly up to 2^24)."""
    import numpy as np

    kind = x.dtype.kind
    if kind == "c":
        raise EdgepackError(f"{path}: {option} holds complex values ({x.dtype}); edgepack takes real inputs: "
                            "save the real part (or magnitude) as float32")
    if kind not in "fiub":
        raise EdgepackError(f"{path}: {option} holds {x.dtype} values, not numbers; save a float32 array "
                            "with np.save")
    if x.ndim <= batch_axis or x.shape[batch_axis] == 0:
        raise EdgepackError(f"{path}: {option} holds no samples (shape {x.shape}); save a batch (N, ...) with "
                            "N >= 1")
    x = x.astype(np.float32)  # float64 beyond float32's range becomes Inf: refused below
    bad = ~np.isfinite(x)
    if bad.any():
        first = np.argwhere(bad)[0]
        what = "NaN" if np.isnan(x[tuple(first)]) else "Inf"
        raise EdgepackError(f"{path}: {option} holds {int(bad.sum())} non-finite value(s) ({what} first at "
                            f"index {tuple(int(i) for i in first)}); remove or replace them")
    return x


def load_npy(path, option: str):
    """np.load a user's .npy file, or a one-line error naming the file and the option it came from. Never
    unpickles; a .npz (zip) or a text file named .npy is refused as such."""
    head = _sniff(path, f"{option} expects a .npy float batch")
    if head.startswith(ZIP_MAGIC):
        raise EdgepackError(f"{path}: a zip archive (an .npz?), not a .npy file; {option} expects one array "
                            "saved with np.save")
    if not head.startswith(NPY_MAGIC):
        raise EdgepackError(f"{path}: not a .npy file (no NumPy header; text or another format?); {option} "
                            "expects an array saved with np.save")
    return _np_load(path, "np.save")


def load_batch(path, option: str):
    """A float32 batch from a .npy file: :func:`load_npy` then :func:`check_batch`."""
    return check_batch(load_npy(path, option), path, option)


def load_labelled_npz(path, option: str = "--data"):
    """(x float32, y int64) from an .npz holding arrays ``x`` and ``y`` (integer class labels), or a one-line
    error naming the file and the option it came from."""
    from pathlib import Path

    import numpy as np

    path = Path(path)
    head = _sniff(path, f"{option} expects an .npz with arrays x and y")
    if not head.startswith(ZIP_MAGIC):
        raise EdgepackError(f"{path}: not an .npz file; {option} expects np.savez(path, x=inputs, y=labels)")
    with _np_load(path, "np.savez") as z:
        try:
            arrays = {k: z[k] for k in z.files}
        except ValueError as e:
            raise EdgepackError(f"{path}: holds pickled Python objects or unreadable arrays, which edgepack never "
                                f"loads ({str(e).splitlines()[0][:80]}); save numeric arrays with np.savez") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise EdgepackError(f"{path}: no array named {' or '.join(missing)} (has: {', '.join(arrays) or 'none'}); "
                            "save with np.savez(path, x=inputs, y=labels)")
    x, y = arrays["x"], arrays["y"]
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise EdgepackError(f"{path}: y must be a 1-D array of integer class labels, got {y.dtype} {y.shape}")
    x = check_batch(x, path, f"{option} x")
    if len(x) != len(y):
        raise EdgepackError(f"{path}: x has {len(x)} examples but y has {len(y)}")
    return x, y.astype(np.int64)
