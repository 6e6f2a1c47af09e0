"""The one error for input that no retry can fix."""

from __future__ import annotations


class InvalidInputError(Exception):
    """The data or the spec cannot be trained on (a column is missing, an entrypoint does not import, ...).

    The message names the column, array or field and the problem; `__main__` writes it to the
    termination log and exits with `EXIT_INVALID_INPUT`, so the job fails at once instead of retrying.
    """
