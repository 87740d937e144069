"""One error type for everything a user can get wrong.

The CLI prints ``str(err)`` on one line and exits non-zero; it never shows a stack trace for these.
"""


class EdgepackError(Exception):
    """A user-facing failure with a one-line message that says what and where, and what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
