"""Training killed at random moments, then resumed, ends with the uninterrupted run's weights."""
import os
import random
import re
import signal
import subprocess
import sys

import torch

from tests.helpers import REPO, small_corpus, train_args

MAX_UPDATE = 6
KILL_MOMENTS = {"update": range(1, MAX_UPDATE + 1), "valid": (2, 4, 6), "save": (2, 4, 6), "copy": (2, 4, 6)}
"""Where tests/kill_during_training.py can kill, by kind: the update numbers (validation and
checkpoints come every 2 updates)."""
PHASE = {kind: i for i, kind in enumerate(KILL_MOMENTS)}
"""Order of the kinds within one update: the update, its validation, its checkpoint, the copy."""


def crash_args(corpus, data, save_dir):
    """6 updates of 1 row (4 an epoch), validated and saved every 2 updates (mid-epoch and at epoch ends)."""
    args = train_args(data, save_dir, MAX_UPDATE)
    args.remove("--disable-validation")
    args[args.index("--validate-interval-updates") + 1] = "2"
    return args + ["--batch-size", "1", "--save-interval-updates", "2", "--audio-root", corpus,
                   "--tokenizer-path", corpus / "spm.model"]


def run(corpus, data, save_dir, kill_at=None):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if kill_at:
        env["KILL_AT"] = kill_at
    else:
        env.pop("KILL_AT", None)
    script = os.path.join(REPO, "tests", "kill_during_training.py") if kill_at else None
    cmd = [sys.executable, script] if script else [sys.executable, "-m", "fairseq_cli.train"]
    return subprocess.run(cmd + [str(a) for a in crash_args(corpus, data, save_dir)], env=env, capture_output=True,
                          text=True, cwd=save_dir)


def final_state(save_dir):
    import wavllm_fairseq  # noqa: F401  (allow-lists fairseq's checkpoint classes)

    return torch.load(save_dir / "checkpoint_last.pt", weights_only=True)


def test_kills_at_random_moments_then_resume_end_with_the_uninterrupted_weights(speech_corpus, tmp_path):
    data = small_corpus(speech_corpus, tmp_path / "data")
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    straight.mkdir()
    crashed.mkdir()
    done = run(speech_corpus, data, straight)
    assert done.returncode == 0, done.stderr[-3000:]
    draw = random.Random(15)
    # One kill of each kind at a random update, in the order the moments come: each kill's moment
    # lies at or after the previous one's, so the run resumed before it reaches it.
    kills = sorted(((draw.choice(KILL_MOMENTS[kind]), kind) for kind in KILL_MOMENTS),
                   key=lambda kill: (kill[0], PHASE[kill[1]]))
    resumed_at = []
    for update, kind in kills:
        proc = run(speech_corpus, data, crashed, f"{kind}:{update}")
        assert proc.returncode == -signal.SIGKILL, (kind, update, proc.returncode, proc.stderr[-3000:])
        resumed_at.append(re.findall(r"Loaded checkpoint .* @ (\d+) updates", proc.stdout + proc.stderr))
    resumed = run(speech_corpus, data, crashed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed_at.append(re.findall(r"Loaded checkpoint .* @ (\d+) updates", resumed.stdout + resumed.stderr))
    expected, got = final_state(straight), final_state(crashed)
    assert got["optimizer_history"][-1]["num_updates"] == MAX_UPDATE
    assert expected["model"].keys() == got["model"].keys()
    for key in expected["model"]:
        torch.testing.assert_close(got["model"][key], expected["model"][key], rtol=0, atol=0, msg=key)
    expected_moments = torch.utils._pytree.tree_leaves(expected["last_optimizer_state"]["state"])
    got_moments = torch.utils._pytree.tree_leaves(got["last_optimizer_state"]["state"])
    assert len(expected_moments) == len(got_moments) > 0
    for a, b in zip(expected_moments, got_moments):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    # The kills left checkpoints behind that later runs resumed from.
    assert any(resumed_at[1:]), (kills, resumed_at)
