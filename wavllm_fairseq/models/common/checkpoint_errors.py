"""The one error type for unusable checkpoints: it names the file, the key and the shapes."""
from __future__ import annotations

from typing import Optional, Sequence

from ...user_error import UserError


class CheckpointError(UserError):
    def __init__(
        self,
        path: str,
        reason: str,
        key: Optional[str] = None,
        expected_shape: Optional[Sequence[int]] = None,
        got_shape: Optional[Sequence[int]] = None,
    ):
        self.path, self.reason, self.key = path, reason, key
        self.expected_shape, self.got_shape = expected_shape, got_shape
        message = f"{path}: {reason}"
        if key is not None:
            message += f" (key {key!r}"
            if expected_shape is not None or got_shape is not None:
                message += f": expected shape {tuple(expected_shape) if expected_shape is not None else '?'}"
                message += f", got {tuple(got_shape) if got_shape is not None else '?'}"
            message += ")"
        super().__init__(message)
