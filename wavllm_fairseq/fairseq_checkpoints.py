"""The one way fairseq's own checkpoints are read and written once the plugin is imported.

fairseq reads a checkpoint (``--path``, ``--restore-file``, ``--finetune-from-model``,
``checkpoint_last.pt``) through ``checkpoint_utils.load_checkpoint_to_cpu``, whose ``torch.load``
leaves ``weights_only`` to torch's default: off before torch 2.6, and off again wherever
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set. Here every read passes ``weights_only=True`` (the
allow-list is in :mod:`.checkpoint_safety`), and every failure, unreadable file or weights that do
not fit the model, is a :class:`CheckpointError` naming the file.

fairseq writes a checkpoint once (atomically: a temporary file, then a rename) and copies it to
its other names (``checkpoint_last.pt``, ``checkpoint_best.pt``) in place, so a kill during a copy
left a partial ``checkpoint_last.pt``. Copies are made atomic the same way, and a resume that
still meets a damaged ``checkpoint_last.pt`` (written by an older version, or a full disk)
continues from the newest intact checkpoint beside it, with a warning naming what it skipped.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import zipfile
from typing import Optional

from fairseq import checkpoint_utils
from fairseq.dataclass.utils import overwrite_args_by_name
from fairseq.file_io import PathManager
from fairseq.trainer import Trainer
from omegaconf import OmegaConf

from .models.common.checkpoint_errors import CheckpointError
from .models.common.checkpoint_files import load_torch_file
from .user_error import UserError

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "checkpoint_last"
"""Stem of the file fairseq-train resumes from (its suffix follows: ``.pt``, ``-shard0.pt``, ...)."""
SHOWN_LOAD_PROBLEMS = 3
"""Lines of a failed weight load (one per mismatched key) kept in the one-line error."""


def read_fairseq_checkpoint(path: str, arg_overrides=None, load_on_all_ranks: bool = False) -> dict:
    """``checkpoint_utils.load_checkpoint_to_cpu`` with ``weights_only=True`` and errors naming the file.

    Its signature is fairseq's; ``load_on_all_ranks`` only mattered to fairseq for remote files
    (a local copy shared by the ranks), which are not read here."""
    if not os.path.isfile(path):
        raise CheckpointError(path, "no such file" if not os.path.exists(path) else "not a file")
    state = load_torch_file(path)
    if not isinstance(state, dict) or "model" not in state or not (state.get("cfg") or state.get("args")):
        raise CheckpointError(path, "not a fairseq checkpoint (no 'model' and 'cfg' entries)")
    # What fairseq's reader does after torch.load: apply overrides, upgrade old layouts.
    if state.get("args") is not None and arg_overrides is not None:
        for name, value in arg_overrides.items():
            setattr(state["args"], name, value)
    if state.get("cfg") is not None:
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
        if arg_overrides is not None:
            overwrite_args_by_name(state["cfg"], arg_overrides)
    return checkpoint_utils._upgrade_state_dict(state)


class AtomicCopyPathManager(PathManager):
    """fairseq's PathManager whose copies replace their destination in one rename."""

    @staticmethod
    def copy(src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        if PathManager.path_requires_pathmanager(dst_path):
            return PathManager.copy(src_path, dst_path, overwrite)
        temporary = dst_path + ".tmp"
        shutil.copyfile(src_path, temporary)
        os.replace(temporary, dst_path)
        return True


def damage(path: str) -> Optional[str]:
    """Why ``path`` cannot be a complete checkpoint as torch writes them (a zip archive), or None.

    Only the archive's directory at its end is read: a file cut short by a kill or a full disk
    lacks it. A file in another format is left for the loader to judge.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if not magic:
        return "empty file"
    if magic != b"PK\x03\x04":
        return None
    try:
        with zipfile.ZipFile(path):
            return None
    except (zipfile.BadZipFile, OSError) as e:
        return f"cut short ({e})"


def intact_resume_file(filename: str) -> str:
    """``filename`` itself, unless it is a damaged ``checkpoint_last*.pt``: then the newest intact
    checkpoint of the same run beside it."""
    folder, name = os.path.split(filename)
    problem = damage(filename) if name.startswith(LAST_CHECKPOINT) and os.path.isfile(filename) else None
    if problem is None:
        return filename
    suffix = name[len(LAST_CHECKPOINT):]  # ".pt", or "-shard<RANK>.pt" under fully-sharded training
    pattern = re.compile(r"checkpoint[^-]*" + re.escape(suffix))
    siblings = [os.path.join(folder, n) for n in os.listdir(folder or ".")
                if pattern.fullmatch(n) and not n.startswith(LAST_CHECKPOINT)]
    skipped = [f"{filename} ({problem})"]
    for candidate in sorted(siblings, key=os.path.getmtime, reverse=True):
        candidate_problem = damage(candidate)
        if candidate_problem is None:
            logger.warning("resuming from %s, the newest intact checkpoint; skipped: %s", candidate, "; ".join(skipped))
            return candidate
        skipped.append(f"{candidate} ({candidate_problem})")
    raise CheckpointError(filename, f"{problem}, and no intact checkpoint beside it to resume from "
                                    "(remove it to start the stage over)")


def describe_load_failure(error: BaseException) -> str:
    """One line from a failed model build or weight load (torch lists one mismatch per line)."""
    # fairseq's trainer replaces the load's own error by a bare Exception saying only "please
    # ensure that the architectures match"; the error it replaced says what does not.
    cause = error.__cause__ or (error.__context__ if type(error) is Exception else None) or error
    if isinstance(cause, CheckpointError):
        return cause.reason
    lines = [" ".join(line.split()) for line in str(cause).splitlines()
             if line.strip() and not line.startswith("Error(s) in loading state_dict")]
    shown = "; ".join(lines[:SHOWN_LOAD_PROBLEMS + 1])
    more = len(lines) - SHOWN_LOAD_PROBLEMS - 1
    return f"does not fit this model: {shown}{f' ... ({more} more)' if more > 0 else ''}"


def _names_the_file(load, file_of):
    """``load`` with its failures, other than errors already addressed to the user, as CheckpointErrors."""

    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        try:
            return load(*args, **kwargs)
        except (UserError, MemoryError):  # CheckpointError included
            raise
        except Exception as e:
            if "out of memory" in str(e):
                raise
            raise CheckpointError(file_of(*args, **kwargs), describe_load_failure(e)) from e

    return wrapper


def _trainer_load_checkpoint(load):
    named = _names_the_file(load, lambda trainer, filename, *args, **kwargs: filename)

    @functools.wraps(load)
    def load_checkpoint(self, filename, *args, **kwargs):
        return named(self, intact_resume_file(filename), *args, **kwargs)

    return load_checkpoint


def install_checkpoint_io() -> None:
    """Routes fairseq's checkpoint reads and copies through this module (idempotent)."""
    if getattr(checkpoint_utils, "load_checkpoint_to_cpu") is read_fairseq_checkpoint:
        return
    checkpoint_utils.load_checkpoint_to_cpu = read_fairseq_checkpoint
    checkpoint_utils.PathManager = AtomicCopyPathManager
    checkpoint_utils.load_model_ensemble_and_task = _names_the_file(
        checkpoint_utils.load_model_ensemble_and_task, lambda filenames, *args, **kwargs: ":".join(filenames))
    Trainer.load_checkpoint = _trainer_load_checkpoint(Trainer.load_checkpoint)
