"""Errors the user can act on are printed as one line, not as a stack trace."""
from __future__ import annotations

import os
import sys

from .user_error import UserError


class OptionError(UserError):
    """A command-line option that cannot work with the data or the other options; the message
    names the option and what would work."""


def install_excepthook() -> None:
    """Prints the errors the user can act on as one line. Only command-line programs install it: a
    library must leave the host program's error handling alone."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        if isinstance(value, UserError):  # bad data, options, templates or checkpoints
            print(f"wavllm_fairseq: error: {value}", file=sys.stderr)
            return
        previous(kind, value, tb)

    sys.excepthook = hook


def running_a_fairseq_command() -> bool:
    """Whether this process is one of fairseq's commands (``fairseq-train``, ``python -m
    fairseq_cli.generate``, ...), which import the plugin through ``--user-dir``."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if main_spec is not None and main_spec.name.startswith("fairseq_cli."):
        return True
    return bool(sys.argv) and os.path.basename(sys.argv[0]).startswith("fairseq-")


def install_excepthook_in_fairseq_commands() -> None:
    """fairseq's commands have no hook of ours to call, so importing the plugin installs the
    excepthook there, and only there."""
    if running_a_fairseq_command():
        install_excepthook()

