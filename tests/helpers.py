"""Helpers shared by test modules (fixtures live in the conftest.py files): fairseq command lines
for the tiny model, reading fairseq's logs, small corpora, ports. Imported as ``tests.helpers``
(pytest.ini puts the repository root on the path)."""
import json
import os
import socket

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MAX_NEW_TOKENS = 12
"""Answers of the tiny model are cut here: long enough for several tokens, short enough to be quick."""


def train_args(corpus, save_dir, max_update):
    return [
        corpus, "--user-dir", f"{REPO}/wavllm_fairseq", "--task", "wavllm",
        "--tokenizer-path", corpus / "spm.model", "--arch", "wavllm_tiny",
        "--criterion", "wavllm_cross_entropy", "--optimizer", "adam", "--lr", "1e-2",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "5", "--max-tokens", "1000000",
        "--max-update", max_update, "--save-dir", save_dir, "--num-workers", "0", "--cpu",
        "--log-format", "json", "--log-interval", "1", "--no-progress-bar", "--seed", "1",
        "--no-epoch-checkpoints", "--validate-interval-updates", "1000", "--disable-validation",
    ]


def generate_args(corpus, checkpoint, results, *extra):
    """fairseq-generate on the corpus's test rows with WER scoring; ``extra`` adds device and decoding flags."""
    return [corpus, "--user-dir", f"{REPO}/wavllm_fairseq", "--task", "wavllm",
            "--tokenizer-path", corpus / "spm.model", "--path", checkpoint,
            "--gen-subset", "test", "--max-tokens", "400000", "--max-len-b", "24",
            "--scoring", "wer", "--results-path", results, *extra]


def train_inner_records(log):
    """fairseq's json per-update records, in fairseq-train's (``| train_inner |``) or hydra's
    (``[train_inner]``) log format."""
    return [json.loads(line[line.index("{"):]) for line in log.splitlines()
            if "| train_inner |" in line or "[train_inner]" in line]


def train_losses(log):
    """Loss per update."""
    return {int(r["num_updates"]): float(r["loss"]) for r in train_inner_records(log)}


def small_corpus(corpus, folder):
    """4 training rows and 1 validation row of the shared corpus (audio read from there)."""
    folder.mkdir()
    for split, rows in (("train", 4), ("valid", 1)):
        lines = (corpus / f"{split}.tsv").read_text().splitlines()
        (folder / f"{split}.tsv").write_text("\n".join(lines[: rows + 1]) + "\n")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
