"""Evaluate checkpoints on test manifests the way the paper scores them.

    python -m wavllm_fairseq.evaluate --path CKPT [--path CKPT2 ...] --data MANIFESTS --out results/ \\
        [--beam 1] [--max-len-b 200] [--batch-size 16] [--prompt-variants K]

``--data`` takes manifest files and folders; a folder stands for its ``test*.tsv`` files
(``*.skipped.tsv`` reports excluded). Each set is scored with its task's metric
(:mod:`wavllm_fairseq.evaluation.tasks`). Per checkpoint, ``OUT/<name>/`` gets ``{set}.jsonl``
(one scored record per row) and ``results.json`` (set -> task, metric, score, n, details);
``OUT/`` gets ``results.json`` (all checkpoints), ``results.md`` (beside the paper's figures) and,
with several checkpoints, ``scores.png``. Replies are cached per set under ``OUT/<name>/cache/``,
keyed by the checkpoint file (path, size, modification time), the decoding options and the
manifest's bytes: re-running decodes only what changed, and always re-scores.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from .data.manifest import ManifestError, read_manifest, resolve_audio_path, write_manifest
from .errors import install_excepthook
from .evaluation.decode import DecodingOptions, LoadedCheckpoint, decode_manifest
from .evaluation.metrics import mean_and_std
from .evaluation.prompts import DEFAULT_POOL, load_pool, reword
from .evaluation.report import bar_chart, headline, results_markdown
from .evaluation.scoring import DecodedRow, score_set
from .evaluation.tasks import METRICS, REWORDABLE_METRICS, set_task

logger = logging.getLogger("wavllm_fairseq.evaluate")


@dataclass(frozen=True)
class TestSet:
    name: str
    """The manifest's file name without ``.tsv``."""
    path: str
    task: str


def find_sets(data: Sequence[str]) -> List[TestSet]:
    """Test sets from manifest files and folders (a folder: its ``test*.tsv``)."""
    paths: List[str] = []
    for item in data:
        if os.path.isdir(item):
            found = sorted(p for p in glob.glob(os.path.join(item, "test*.tsv")) if not p.endswith(".skipped.tsv"))
            if not found:
                raise ValueError(f"{item}: no test*.tsv manifest in this folder")
            paths += found
        elif os.path.isfile(item):
            paths.append(item)
        else:
            raise ValueError(f"{item}: no such manifest file or folder")
    sets, seen = [], {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        if name in seen:
            raise ValueError(f"{path}: a set named {name!r} is already given ({seen[name]})")
        seen[name] = path
        rows = read_manifest(path)
        missing = [r for r in rows if r.tgt_text is None]
        if missing:
            raise ValueError(f"{path}: no tgt_text column: nothing to score the replies against")
        sets.append(TestSet(name, path, set_task(path, [r.task for r in rows])))
    return sets


def checkpoint_names(paths: Sequence[str], names: Optional[Sequence[str]]) -> List[str]:
    """``--name``s if given, else each checkpoint's folder name, else folder and file name."""
    if names:
        if len(names) != len(paths):
            raise ValueError(f"{len(names)} --name for {len(paths)} --path")
        chosen = list(names)
    else:
        chosen = [os.path.basename(os.path.dirname(os.path.abspath(p))) for p in paths]
        if len(set(chosen)) < len(chosen):
            chosen = [f"{c}-{os.path.splitext(os.path.basename(p))[0]}" for c, p in zip(chosen, paths)]
    if len(set(chosen)) < len(chosen) or any(not c or "/" in c for c in chosen):
        raise ValueError(f"checkpoint names must be distinct folder names, got {chosen}; give --name per --path")
    return chosen


def cache_key(checkpoint: str, options: DecodingOptions, manifest: str) -> str:
    stat = os.stat(checkpoint)
    with open(manifest, "rb") as f:
        manifest_hash = hashlib.sha256(f.read()).hexdigest()
    payload = {"checkpoint": os.path.abspath(checkpoint), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
               "decoding": options.cache_fields(), "manifest": manifest_hash}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def reworded_manifest(test_set: TestSet, wording: str, path: str, audio_root: Optional[str]) -> None:
    """The set with every prompt replaced by ``wording`` (audio paths made absolute)."""
    rows = read_manifest(test_set.path)
    for row in rows:
        row.prompt = reword(row.prompt, wording, f"{test_set.path}, line {row.line}, id {row.id!r}")
        row.audio = [resolve_audio_path(a, audio_root, test_set.path) for a in row.audio]
        row.task = test_set.task
    write_manifest(path, rows)


class Evaluation:
    """Decodes (or reads from the cache) and scores every set for every checkpoint."""

    def __init__(self, out: str, options: DecodingOptions, prompt_variants: int = 0, prompt_pool: str = DEFAULT_POOL,
                 variants_for: Optional[Sequence[str]] = None):
        self.out, self.options, self.prompt_variants = out, options, prompt_variants
        self.variants_for = None if variants_for is None else set(variants_for)
        """Names of the checkpoints decoded under reworded prompts (None: all)."""
        self.pool = load_pool(prompt_pool) if prompt_variants else {}
        self.prompt_pool = prompt_pool
        self.decoded: List[str] = []
        """``name/set`` of every set decoded (not read from the cache) in this run."""
        self._loaded: Dict[str, LoadedCheckpoint] = {}
        """The checkpoint in memory, by path: loaded only when a set needs decoding."""

    def _variants(self, name: str, test_set: TestSet, cache: str) -> List[tuple]:
        if not self.prompt_variants or METRICS[test_set.task] not in REWORDABLE_METRICS or \
                (self.variants_for is not None and name not in self.variants_for):
            return []
        wordings = self.pool.get(test_set.task, [])
        if not wordings:
            logger.warning("%s: no %s wordings in %s; no prompt variants", test_set.name, test_set.task, self.prompt_pool)
            return []
        if len(wordings) < self.prompt_variants:
            raise ValueError(f"--prompt-variants {self.prompt_variants}, but {self.prompt_pool} has "
                             f"{len(wordings)} wording(s) for task {test_set.task}")
        jobs = []
        for k, wording in enumerate(wordings[: self.prompt_variants], start=1):
            path = os.path.join(cache, f"{test_set.name}.prompt{k}.tsv")
            reworded_manifest(test_set, wording, path, self.options.audio_root)
            jobs.append((f"{test_set.name}.prompt{k}", path, k, wording))
        return jobs

    def _replies(self, name: str, path: str, set_name: str, manifest: str, task: str, cache: str) -> tuple:
        """(row id -> reply, how they were obtained): from the cache when its key matches, else decoded."""
        key = cache_key(path, self.options, manifest)
        cache_file = os.path.join(cache, f"{set_name}.json")
        replies = _read_cache(cache_file, key)
        if replies is not None:
            return replies, "replies from the cache"
        started = time.time()
        if path not in self._loaded:
            logger.info("[%s] loading %s", name, path)
            self._loaded = {path: LoadedCheckpoint(path, self.options)}  # one model in memory at a time
        replies = decode_manifest(self._loaded[path], manifest, task)
        with open(cache_file, "w", encoding="utf-8") as f:
            json.dump({"key": key, "replies": replies}, f, ensure_ascii=False)
        self.decoded.append(f"{name}/{set_name}")
        return replies, f"decoded in {time.time() - started:.1f} s"

    def checkpoint(self, name: str, path: str, sets: List[TestSet]) -> Dict:
        """Every set (and its rewordings) with one checkpoint; writes OUT/name/ and returns its results."""
        folder = os.path.join(self.out, name)
        cache = os.path.join(folder, "cache")
        os.makedirs(cache, exist_ok=True)
        results: Dict[str, Dict] = {}
        for test_set in sets:
            jobs = [(test_set.name, test_set.path, None, None)] + self._variants(name, test_set, cache)
            for set_name, manifest, variant, wording in jobs:
                replies, how = self._replies(name, path, set_name, manifest, test_set.task, cache)
                rows = [DecodedRow(r.id, r.prompt, r.tgt_text, replies[r.id]) for r in read_manifest(manifest)]
                summary, records = score_set(set_name, test_set.task, rows)
                summary.update(manifest=os.path.abspath(test_set.path), prompt_variant=variant, wording=wording)
                results[set_name] = summary
                with open(os.path.join(folder, f"{set_name}.jsonl"), "w", encoding="utf-8") as f:
                    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
                logger.info("[%s] %s (%s, %d rows): %s; %s", name, set_name, test_set.task, summary["n"],
                            headline(summary), how)
        with open(os.path.join(folder, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, ensure_ascii=False)
        return {"path": os.path.abspath(path), "decoding": self.options.cache_fields(), "sets": results,
                "prompt_robustness": prompt_robustness(results, sets)}

    def run(self, checkpoints: Sequence[str], data: Sequence[str], names: Optional[Sequence[str]] = None) -> Dict:
        sets = find_sets(data)
        labels = checkpoint_names(checkpoints, names)
        unknown = sorted((self.variants_for or set()) - set(labels))
        if unknown:
            raise ValueError(f"--prompt-variants-for names no checkpoint: {', '.join(unknown)} (names: {', '.join(labels)})")
        for path in checkpoints:
            if not os.path.isfile(path):
                raise ValueError(f"{path}: checkpoint not found")
        logger.info("%d set(s): %s", len(sets), ", ".join(f"{s.name} ({s.task})" for s in sets))
        os.makedirs(self.out, exist_ok=True)
        results = {label: self.checkpoint(label, path, sets) for label, path in zip(labels, checkpoints)}
        with open(os.path.join(self.out, "results.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1, ensure_ascii=False)
        with open(os.path.join(self.out, "results.md"), "w", encoding="utf-8") as f:
            f.write(results_markdown(results))
        if len(results) > 1:
            bar_chart(results, os.path.join(self.out, "scores.png"))
        return results


def _read_cache(path: str, key: str) -> Optional[Dict[str, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return cached["replies"] if cached.get("key") == key else None


def prompt_robustness(results: Dict[str, Dict], sets: List[TestSet]) -> Dict[str, Dict]:
    """Task -> the original wording's score and each rewording's (means over the task's sets),
    with the mean and standard deviation over the rewordings."""
    out = {}
    for task in dict.fromkeys(s.task for s in sets):
        names = [s.name for s in sets if s.task == task]
        variants = sorted({r["prompt_variant"] for n, r in results.items()
                           if r["prompt_variant"] is not None and n.rsplit(".prompt", 1)[0] in names})
        if not variants:
            continue
        scores = [sum(results[f"{n}.prompt{k}"]["score"] for n in names) / len(names) for k in variants]
        mean, std = mean_and_std(scores)
        out[task] = {"metric": results[names[0]]["metric"], "sets": names,
                     "original": sum(results[n]["score"] for n in names) / len(names),
                     "wordings": [results[f"{names[0]}.prompt{k}"]["wording"] for k in variants],
                     "scores": scores, "mean": mean, "std": std}
    return out


def log_to(log_path: str) -> None:
    """This command's progress goes to the terminal and ``log_path``; everything else that is logged
    (fairseq's INFO lines, library warnings not silenced at their source) to ``log_path`` only."""
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    to_file = logging.FileHandler(log_path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s | %(levelname)s | %(name)s | %(message)s"))
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setFormatter(logging.Formatter("%(message)s"))
    logging.captureWarnings(True)
    root = logging.getLogger()
    root.handlers[:] = [to_file]
    root.setLevel(logging.INFO)
    logger.handlers[:] = [to_terminal, to_file]
    logger.propagate = False
    logger.setLevel(logging.INFO)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wavllm_fairseq.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--path", action="append", required=True, help="checkpoint; repeat to compare several")
    p.add_argument("--name", action="append", help="a name per --path (default: the checkpoint's folder name)")
    p.add_argument("--data", nargs="+", required=True, help="manifest files and/or folders (a folder: its test*.tsv)")
    p.add_argument("--out", required=True, help="output folder (re-running reuses its cached replies)")
    defaults = DecodingOptions()
    p.add_argument("--beam", type=int, default=defaults.beam, help="beam size (1: greedy)")
    p.add_argument("--max-len-a", type=float, default=defaults.max_len_a,
                   help="longest reply: a * prompt tokens + b")
    p.add_argument("--max-len-b", type=int, default=defaults.max_len_b, help="see --max-len-a")
    p.add_argument("--lenpen", type=float, default=defaults.lenpen, help="beam search length penalty")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="rows per batch")
    p.add_argument("--cpu", action="store_true", help="decode on the CPU even when a GPU is there")
    p.add_argument("--tokenizer-path", help="tokenizer instead of the one named in the checkpoint")
    p.add_argument("--audio-root", help="root of relative audio paths (default: each manifest's folder)")
    p.add_argument("--model-overrides", default=defaults.model_overrides,
                   help='JSON object of checkpoint config values to replace, e.g. {"llm_path": "/models/llama"}')
    p.add_argument("--prompt-variants", type=int, default=0, metavar="K",
                   help="also decode ASR, ST and closed-answer sets under K rewordings of their instruction")
    p.add_argument("--prompt-variants-for", action="append", metavar="NAME",
                   help="only these checkpoints (by --name) get the prompt variants; default: all")
    p.add_argument("--prompt-pool", default=DEFAULT_POOL, help="JSON task -> rewordings (default: %(default)s)")
    return p


def main(argv: Optional[List[str]] = None) -> Dict:
    args = parser().parse_args(argv)
    log_to(os.path.join(args.out, "evaluate.log"))
    options = DecodingOptions(beam=args.beam, max_len_a=args.max_len_a, max_len_b=args.max_len_b, lenpen=args.lenpen,
                              tokenizer_path=args.tokenizer_path, model_overrides=args.model_overrides,
                              audio_root=args.audio_root, batch_size=args.batch_size, cpu=args.cpu)
    evaluation = Evaluation(args.out, options, args.prompt_variants, args.prompt_pool, args.prompt_variants_for)
    try:
        results = evaluation.run(args.path, args.data, args.name)
    except (ValueError, ManifestError, OSError) as e:
        raise SystemExit(f"wavllm_fairseq.evaluate: error: {e}") from None
    logger.info("decoded %d set(s), %d from the cache; table in %s",
                len(evaluation.decoded), sum(len(r["sets"]) for r in results.values()) - len(evaluation.decoded),
                os.path.join(args.out, "results.md"))
    return results


if __name__ == "__main__":
    install_excepthook()
    main()
