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
