"""Warnings and log lines of the libraries we build on that a user cannot act on, silenced where
they arise: the plugin installs these filters before it imports fairseq, and a launcher can
install them before fairseq-hydra-train starts (``python -c "$HYDRA_TRAIN_QUIET" ARGS``, see
:data:`HYDRA_TRAIN_QUIET`). Each names its cause."""
from __future__ import annotations

import logging
import warnings

QUIET_WARNINGS = (
    # fairscale (imported by fairseq) and fairseq's training step use torch.cuda.amp.custom_fwd,
    # custom_bwd and autocast, which torch deprecates in favour of torch.amp.
    (r"(?s).*torch\.cuda\.amp\.(custom_fwd|custom_bwd|autocast)", FutureWarning),
    # fairseq's batch iterators always ask for pinned memory; on a CPU-only machine torch warns it cannot.
    (r"(?s).*'pin_memory' argument is set as true but no accelerator", UserWarning),
    # fairseq-hydra-train calls hydra.main and the compose API in ways hydra >= 1.1 deprecates.
    (r"(?s).*(version_base parameter is not specified|validated against ConfigStore schema"
     r"|Hydra versions will no longer change working directory|Defaults list is missing `_self_`)", UserWarning),
)
"""(message regex, category) of each library warning silenced."""
QUIET_LOGGERS = {
    # "Please install tensorboardX", logged by fairseq at import for a speech synthesis task we never use.
    "fairseq.tasks.text_to_speech": logging.WARNING,
}


def silence_library_noise() -> None:
    for message, category in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


HYDRA_TRAIN_QUIET = ("from wavllm_fairseq.library_noise import silence_library_noise; silence_library_noise(); "
                     "import runpy; runpy.run_module('fairseq_cli.hydra_train', run_name='__main__', alter_sys=True)")
"""Python code that runs fairseq-hydra-train (arguments from the command line) with the filters above."""
