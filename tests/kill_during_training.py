"""fairseq-train that kills itself (SIGKILL, as the kernel's OOM killer or a pre-empted job would)
at the moment named by ``KILL_AT=<kind>:<update>``:

- ``update``: during training update number <update> (its forward and backward pass),
- ``valid``: during the validation after update <update>,
- ``save``: while the checkpoint of update <update> is written (half of its bytes are out),
- ``copy``: while that checkpoint is copied to checkpoint_last.pt, the file a rerun resumes from
  (half of the bytes are out).

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

KIND, AT = os.environ["KILL_AT"].split(":")
AT = int(AT)
_reached = {"update": 0, "save": 0}
"""The update under way (fairseq's count, restored on resume) and the last one saved."""


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _train_step(step):
    def train_step(self, *args, **kwargs):
        _reached["update"] = kwargs["update_num"] + 1  # fairseq's trainer passes it by name
        if KIND == "update" and _reached["update"] == AT:
            _die()
        return step(self, *args, **kwargs)
    return train_step


def _valid_step(step):
    def valid_step(self, *args, **kwargs):
        if KIND == "valid" and _reached["update"] == AT:
            _die()
        return step(self, *args, **kwargs)
    return valid_step


def _write_half_and_die(data: bytes, f) -> None:
    if isinstance(f, (str, os.PathLike)):
        f = open(f, "wb")
    f.write(data[: len(data) // 2])
    f.flush()
    _die()


_save, _copyfile = torch.save, shutil.copyfile


def _checkpoint_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get("optimizer_history"):
        _reached["save"] = obj["optimizer_history"][-1]["num_updates"]
        if KIND == "save" and _reached["save"] == AT:
            buffer = io.BytesIO()
            _save(obj, buffer, *args, **kwargs)
            _write_half_and_die(buffer.getvalue(), f)
    return _save(obj, f, *args, **kwargs)


def _checkpoint_copy(src, dst, *args, **kwargs):
    if KIND == "copy" and _reached["save"] == AT and os.path.basename(dst).startswith("checkpoint_last"):
        with open(src, "rb") as f:
            _write_half_and_die(f.read(), dst)
    return _copyfile(src, dst, *args, **kwargs)


FairseqTask.train_step = _train_step(FairseqTask.train_step)
FairseqTask.valid_step = _valid_step(FairseqTask.valid_step)
torch.save = _checkpoint_save
shutil.copyfile = _checkpoint_copy

if __name__ == "__main__":
    sys.argv = ["fairseq-train", *sys.argv[1:]]
    cli_main()
