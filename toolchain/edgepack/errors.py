"""One error type for everything a user can get wrong.

The CLI prints ``str(err)`` on one line and exits non-zero; it never shows a stack trace for these.
"""


class EdgepackError(Exception):
    """A user-facing failure with a one-line message that says what and where, and what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def load_npy(path, option: str):
    """np.load a user's .npy file, or a one-line error naming the file and the option it came from."""
    from pathlib import Path

    import numpy as np

    path = Path(path)
    if not path.exists():
        raise EdgepackError(f"{path}: no such file ({option} expects a .npy float batch)")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as e:
        raise EdgepackError(f"{path}: not a readable .npy file ({e})") from e


def load_labelled_npz(path, option: str = "--data"):
    """(x float32, y int64) from an .npz holding arrays ``x`` and ``y`` (integer class labels), or a one-line
    error naming the file and the option it came from."""
    from pathlib import Path

    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise EdgepackError(f"{path}: no such file ({option} expects an .npz with arrays x and y)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise EdgepackError(f"{path}: not a readable .npz file ({str(e).splitlines()[0][:120]})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise EdgepackError(f"{path}: no array named {' or '.join(missing)} (has: {', '.join(arrays) or 'none'}); "
                            "save with np.savez(path, x=inputs, y=labels)")
    x, y = arrays["x"], arrays["y"]
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise EdgepackError(f"{path}: y must be a 1-D array of integer class labels, got {y.dtype} {y.shape}")
    if len(x) != len(y):
        raise EdgepackError(f"{path}: x has {len(x)} examples but y has {len(y)}")
    return x.astype(np.float32), y.astype(np.int64)
