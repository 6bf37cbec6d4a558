"""Errors the user can act on are printed as one line, not as a stack trace."""
from __future__ import annotations

import sys

from .data.audio import AudioError
from .data.manifest import ManifestError

USER_ERRORS = (ManifestError, AudioError)


def install_excepthook() -> None:
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, USER_ERRORS + _checkpoint_errors()):
            print(f"wavllm_fairseq: error: {value}", file=sys.stderr)
            return
        previous(kind, value, tb)

    sys.excepthook = hook


def _checkpoint_errors() -> tuple:
    from .models.checkpoint_errors import CheckpointError

    return (CheckpointError,)
