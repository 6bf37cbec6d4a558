"""Errors the user can act on are printed as one line, not as a stack trace."""
from __future__ import annotations

import sys

from .data.audio import AudioError
from .data.manifest import ManifestError
from .user_error import UserError


class OptionError(UserError):
    """A command-line option that cannot work with the data or the other options; the message
    names the option and what would work."""


USER_ERRORS = (ManifestError, AudioError, OptionError)


def install_excepthook() -> None:
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, USER_ERRORS + _checkpoint_errors()):
            print(f"wavllm_fairseq: error: {value}", file=sys.stderr)
            return
        previous(kind, value, tb)

    sys.excepthook = hook


def _checkpoint_errors() -> tuple:
    from .models.common.checkpoint_errors import CheckpointError

    return (CheckpointError,)
