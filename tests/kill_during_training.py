"""fairseq-train that kills itself (SIGKILL, as the kernel's OOM killer or a pre-empted job would)
at the moment named by ``KILL_AT=<kind>:<n>``, the n-th time in this process that:

- ``update``: a training update is under way (its forward and backward pass),
- ``valid``: a validation batch is being scored,
- ``save``: a checkpoint file is being written (half of its bytes are out),
- ``copy``: a checkpoint is being copied to its other names (checkpoint_last.pt, checkpoint_best.pt;
  half of the bytes are out).

Used by tests/test_crash_resume.py: ``python tests/kill_during_training.py <fairseq-train args>``.
"""
import io
import os
import shutil
import signal
import sys

from fairseq_cli.train import cli_main  # first: it sets up fairseq's logging

import torch  # noqa: E402
from fairseq.tasks import FairseqTask  # noqa: E402

KIND, NTH = os.environ["KILL_AT"].split(":")
_seen = {}


def _moment(kind: str) -> bool:
    _seen[kind] = _seen.get(kind, 0) + 1
    return kind == KIND and _seen[kind] == int(NTH)


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _during(kind, step):
    def wrapper(*args, **kwargs):
        if _moment(kind):
            _die()
        return step(*args, **kwargs)
    return wrapper


FairseqTask.train_step = _during("update", FairseqTask.train_step)
FairseqTask.valid_step = _during("valid", FairseqTask.valid_step)
_save = torch.save
_copyfile = shutil.copyfile


def _partial_save(obj, f, *args, **kwargs):
    if not _moment("save"):
        return _save(obj, f, *args, **kwargs)
    buffer = io.BytesIO()
    _save(obj, buffer, *args, **kwargs)
    data = buffer.getvalue()
    if isinstance(f, (str, os.PathLike)):
        f = open(f, "wb")
    f.write(data[: len(data) // 2])
    f.flush()
    _die()


def _partial_copy(src, dst, *args, **kwargs):
    if not _moment("copy"):
        return _copyfile(src, dst, *args, **kwargs)
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: len(data) // 2])
    _die()


torch.save = _partial_save
shutil.copyfile = _partial_copy

if __name__ == "__main__":
    sys.argv = ["fairseq-train", *sys.argv[1:]]
    cli_main()
