"""Two-process data-parallel training through fairseq's own distributed trainer, on CPU (gloo)."""
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, free_port, generate_args, train_args, train_inner_records, train_losses

from wavllm_fairseq.consolidate_checkpoint import consolidate
from wavllm_fairseq.models.common.checkpoint_errors import CheckpointError

# Runs fairseq-train, and before each checkpoint save writes this rank's trainable weights:
# fairseq itself only saves on rank 0, and the point is to compare the ranks.
RANK_WRAPPER = """
import sys, torch
from fairseq_cli import train  # first: it sets up fairseq's log format, which the test parses
from fairseq import checkpoint_utils

dump_prefix = sys.argv.pop(1)
if "fully_sharded" in sys.argv:
    from tests import fsdp_on_cpu
    fsdp_on_cpu.install()
original_save = checkpoint_utils.save_checkpoint

def save_with_rank_dump(cfg, trainer, epoch_itr, val_loss):
    trainable = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    torch.save({"num_updates": trainer.get_num_updates(), "weights": trainable},
               f"{dump_prefix}.rank{trainer.data_parallel_rank}.pt")
    return original_save(cfg, trainer, epoch_itr, val_loss)

checkpoint_utils.save_checkpoint = save_with_rank_dump
sys.argv[0] = "fairseq-train"
train.cli_main()
"""

BATCH_SIZE = 2


def launch(corpus, save_dir, dump_prefix, extra):
    """Starts one fairseq-train process (one epoch, batches of BATCH_SIZE rows) through the wrapper."""
    # --max-tokens also caps an example's size (fairseq filters by it); here batches are by rows.
    args = train_args(corpus, save_dir, 1000) + [
        "--max-epoch", "1", "--batch-size", BATCH_SIZE, "--max-tokens", 10_000_000, *extra]
    paths = [REPO, os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-c", RANK_WRAPPER, str(dump_prefix), *map(str, args)]
    return subprocess.Popen(cmd, cwd=save_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout=120):
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"fairseq-train failed ({proc.returncode}):\n{out[-6000:]}")
    return out


FULLY_SHARDED = ("--ddp-backend", "fully_sharded", "--not-fsdp-flatten-parameters", "--use-sharded-state",
                 "--activation-checkpointing")


@pytest.fixture(scope="module")
def runs(speech_corpus, tmp_path_factory):
    """One epoch in one process, in two data-parallel processes and in two fully-sharded ones
    (with activation checkpointing), all from the same seed and run concurrently."""
    dirs = {name: tmp_path_factory.mktemp(name) for name in ("single", "ddp", "fsdp")}
    procs = {"single": launch(speech_corpus, dirs["single"], dirs["single"] / "dump", [])}
    for name, backend in (("ddp", ("--ddp-backend", "legacy_ddp")), ("fsdp", FULLY_SHARDED)):
        init = f"tcp://127.0.0.1:{free_port()}"
        for rank in range(2):
            procs[name, rank] = launch(speech_corpus, dirs[name], dirs[name] / "dump", two_ranks(rank, init, *backend))
    logs = {name: finish(p) for name, p in procs.items()}
    return logs, dirs


def two_ranks(rank, init_method, *backend):
    return ["--distributed-world-size", 2, "--distributed-no-spawn", "--distributed-backend", "gloo",
            "--distributed-init-method", init_method, "--distributed-rank", rank, "--device-id", rank, *backend]


def test_both_ranks_end_with_identical_trained_weights(runs):
    dist_dir = runs[1]["ddp"]
    dumps = [torch.load(dist_dir / f"dump.rank{r}.pt") for r in range(2)]
    assert dumps[0]["num_updates"] == dumps[1]["num_updates"] > 0
    w0, w1 = dumps[0]["weights"], dumps[1]["weights"]
    assert set(w0) == set(w1) and any(".lora_B" in k for k in w0)
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    # LoRA's B starts at zero: a non-zero B shows the updates really changed the weights compared.
    assert any(w0[k].abs().sum() > 0 for k in w0 if k.endswith(".lora_B"))
    assert (dist_dir / "checkpoint_last.pt").exists()


def test_effective_batch_is_the_union_of_both_ranks(runs, speech_corpus):
    logs, _ = runs
    n_train = len((speech_corpus / "train.tsv").read_text().splitlines()) - 1  # minus the header
    single, dist = train_inner_records(logs["single"]), train_inner_records(logs["ddp", 0])
    assert single and dist
    assert {float(r["bsz"]) for r in single} == {BATCH_SIZE}
    assert {float(r["bsz"]) for r in dist} == {2 * BATCH_SIZE}
    # One epoch: every row once, so two ranks take half the updates.
    assert max(int(r["num_updates"]) for r in single) == n_train // BATCH_SIZE
    assert max(int(r["num_updates"]) for r in dist) == n_train // (2 * BATCH_SIZE)
    assert train_inner_records(logs["ddp", 1]) == [], "only rank 0 logs"
    # Per-task counts add up across ranks although the ranks' batches hold different tasks.
    tasks = [r.rsplit("\t", 1)[1] for r in (speech_corpus / "train.tsv").read_text().splitlines()[1:]]
    expected = {"asr": tasks.count("asr"), "text": tasks.count("text")}
    assert expected["asr"] > 0 and expected["text"] > 0 and sum(expected.values()) == n_train
    for records in (single, dist):
        for r in records:
            assert sum(float(v) for k, v in r.items() if k.startswith("n_task_")) == float(r["bsz"]), r
        assert {t: sum(float(r.get(f"n_task_{t}", 0)) for r in records) for t in expected} == expected


@pytest.fixture(scope="module")
def consolidated_stage1(runs):
    """The fully-sharded stage-1 run's checkpoint, joined from its rank files."""
    fsdp_dir = runs[1]["fsdp"]
    assert not (fsdp_dir / "checkpoint_last.pt").exists(), "fully sharded: rank files only"
    return consolidate(str(fsdp_dir / "checkpoint_last.pt"))


def same_weights(consolidated, ddp_dir):
    """The consolidated fully-sharded weights, checked equal to data-parallel training's."""
    sharded = torch.load(consolidated)["model"]
    replicated = torch.load(ddp_dir / "checkpoint_last.pt")["model"]
    assert sharded.keys() == replicated.keys()
    for name in sharded:
        torch.testing.assert_close(sharded[name], replicated[name], rtol=1e-4, atol=1e-5, msg=name)
    return sharded


def hypotheses(results_dir):
    return [line for line in (results_dir / "generate-test.txt").read_text().splitlines() if line.startswith("H-")]


def test_fully_sharded_training_gives_the_data_parallel_weights(runs, consolidated_stage1):
    """Sharding changes where weights live, not what training computes: the consolidated
    fully-sharded checkpoint holds the weights data-parallel training reached."""
    logs, dirs = runs
    assert train_losses(logs["fsdp", 0]).keys() == train_losses(logs["ddp", 0]).keys()
    sharded = same_weights(consolidated_stage1, dirs["ddp"])
    # LoRA's B starts at zero: non-zero values show the compared weights were trained.
    assert any(v.abs().sum() > 0 for k, v in sharded.items() if k.endswith(".lora_B"))


@pytest.fixture(scope="module")
def stage2_runs(runs, consolidated_stage1, speech_corpus, tmp_path_factory):
    """Stage 2 (with the prompt adapter) on two ranks from each backend's stage-1 checkpoint: fairseq's
    --finetune-from-model for data-parallel training, the model's --init-from for fully-sharded."""
    starts = {"ddp": ["--ddp-backend", "legacy_ddp", "--finetune-from-model", runs[1]["ddp"] / "checkpoint_last.pt"],
              "fsdp": [*FULLY_SHARDED, "--init-from", consolidated_stage1]}
    dirs, procs = {}, {}
    for name, start in starts.items():
        dirs[name] = tmp_path_factory.mktemp(f"stage2_{name}")
        init = f"tcp://127.0.0.1:{free_port()}"
        for rank in range(2):
            procs[name, rank] = launch(speech_corpus, dirs[name], dirs[name] / "dump",
                                       two_ranks(rank, init, "--prompt-adapter", *start))
    logs = {key: finish(p) for key, p in procs.items()}
    return logs, dirs


def test_fully_sharded_stage_2_starts_from_stage_1_and_gives_the_data_parallel_weights(stage2_runs):
    logs, dirs = stage2_runs
    assert "prompt adapter not in the checkpoint" in logs["fsdp", 0]
    sharded = same_weights(consolidate(str(dirs["fsdp"] / "checkpoint_last.pt")), dirs["ddp"])
    assert any(k.startswith("encoder.prompt_adapter.") for k in sharded)


def test_consolidation_names_missing_mixed_or_foreign_shards(runs, tmp_path):
    import shutil

    _, dirs = runs
    checkpoint = tmp_path / "checkpoint_last.pt"
    with pytest.raises(CheckpointError, match="no shard files"):
        consolidate(str(checkpoint))
    shutil.copy(dirs["fsdp"] / "checkpoint_last-shard0.pt", tmp_path / "checkpoint_last-shard0.pt")
    shutil.copy(dirs["fsdp"] / "checkpoint_last-shard1.pt", tmp_path / "checkpoint_last-shard2.pt")
    with pytest.raises(CheckpointError, match=r"rank\(s\) \[1\] are missing"):
        consolidate(str(checkpoint))
    later = torch.load(dirs["fsdp"] / "checkpoint_last-shard1.pt")
    later["optimizer_history"][-1]["num_updates"] += 1
    torch.save(later, tmp_path / "checkpoint_last-shard1.pt")
    (tmp_path / "checkpoint_last-shard2.pt").unlink()
    with pytest.raises(CheckpointError, match="different updates.*shard1.pt: 5"):
        consolidate(str(checkpoint))
    shutil.copy(dirs["ddp"] / "checkpoint_last.pt", tmp_path / "checkpoint_last-shard1.pt")
    with pytest.raises(CheckpointError, match="shard1.pt: not a fully-sharded checkpoint shard"):
        consolidate(str(checkpoint))
    assert not (tmp_path / "checkpoint_last_consolidated.pt").exists()


def test_a_consolidated_checkpoint_decodes(consolidated_stage1, speech_corpus, run_fairseq, tmp_path):
    run_fairseq("generate", generate_args(speech_corpus, consolidated_stage1, tmp_path / "gen", "--cpu"), cwd=tmp_path)
    assert len(hypotheses(tmp_path / "gen")) == 3


GPU_BACKENDS = {
    "ddp": ({"ddp_backend": "legacy_ddp"}, {"bf16": True}, "--bf16"),
    # fairseq refuses bf16 with fully_sharded; FSDP computes in float16 over float32 master weights.
    "fully_sharded": ({"ddp_backend": "fully_sharded", "not_fsdp_flatten_parameters": True, "use_sharded_state": True},
                      {"fp16": True}, "--fp16"),
}


def gpu_config(corpus, save_dir, max_update, backend):
    """The README's GPU settings (bf16 DDP, or fp16 fully sharded; activation checkpointing) for the
    tiny model, as a fairseq-hydra-train config: fairseq-train's --bf16 would also set --tpu."""
    from wavllm_fairseq.models.wavllm import ARCHITECTURES

    distributed, precision, _ = GPU_BACKENDS[backend]
    distributed = {**distributed, "distributed_world_size": 1, "distributed_rank": 0, "distributed_no_spawn": True,
                   "distributed_init_method": f"tcp://127.0.0.1:{free_port()}"}
    return {
        "common": {"user_dir": f"{REPO}/wavllm_fairseq", "seed": 1, "log_format": "json", "log_interval": 1,
                   **precision},
        "dataset": {"train_subset": "train", "max_tokens": 1_000_000, "num_workers": 0, "disable_validation": True},
        "distributed_training": distributed,
        "task": {"_name": "wavllm", "data": str(corpus), "tokenizer_path": str(corpus / "spm.model")},
        "model": {"_name": "wavllm", **ARCHITECTURES["wavllm_tiny"], "activation_checkpointing": True},
        "criterion": {"_name": "wavllm_cross_entropy"},
        "optimizer": {"_name": "adam"},
        "lr_scheduler": {"_name": "inverse_sqrt", "warmup_updates": 5},
        "optimization": {"max_update": max_update, "lr": [0.01]},
        "checkpoint": {"save_dir": str(save_dir), "no_epoch_checkpoints": True},
    }


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_trains_and_generates_on_a_gpu(speech_corpus, tmp_path, run_fairseq, backend):
    from omegaconf import OmegaConf

    OmegaConf.save(gpu_config(speech_corpus, tmp_path, 30, backend), tmp_path / "gpu.yaml")
    log = run_fairseq("hydra_train", ["--config-dir", tmp_path, "--config-name", "gpu"], cwd=tmp_path)
    losses = train_losses(log.stdout + log.stderr)
    assert sorted(losses) == list(range(1, 31)) and all(map(torch.isfinite, torch.tensor(list(losses.values()))))
    assert sum(losses[u] for u in range(26, 31)) < sum(losses[u] for u in range(1, 6)) - 0.5
    checkpoint = tmp_path / "checkpoint_last.pt"
    if backend == "fully_sharded":
        checkpoint = consolidate(str(checkpoint))
    precision_flag = GPU_BACKENDS[backend][2]
    run_fairseq("generate", generate_args(speech_corpus, checkpoint, tmp_path / "gen", precision_flag, "--beam", "4"),
                cwd=tmp_path)
    assert len(hypotheses(tmp_path / "gen")) == 3
