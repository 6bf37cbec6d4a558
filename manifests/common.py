"""What every manifest script shares, one place per concern.

- header reads in parallel (:func:`read_header_frames`),
- prompt drawing from the pools of ``prompts.json`` (:func:`draw_prompt`),
- skip reporting (:class:`SkipReport`),
- turning candidate examples into rows (:func:`build_rows`) and writing them (:func:`write_outputs`),
- the command-line options all scripts take (:func:`add_common_args`).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from tqdm import tqdm

from wavllm_fairseq.data.audio import AudioError, audio_info_frames
from wavllm_fairseq.data.manifest import ManifestRow, write_manifest

PROMPTS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts.json")
DEFAULT_WORKERS = 8
"""Threads reading headers. On a local disk they do not pay (the Python side of a header read holds
the GIL: 8 threads read about half as many headers per second as one from the page cache, as many
from disk; manifests/README.md), but where every open waits on the storage (network file systems)
they divide the wait. The default bets on such storage: there the gain is minutes, here a loss of seconds."""
CHUNK_FILES = 64
"""Files per thread-pool task."""
SHOWN_SKIPS = 10
"""Skipped entries printed one by one in the summary; all of them go to the skip file."""


# ---------------------------------------------------------------- skip reporting
@dataclass
class SkipReport:
    """Entries left out of a manifest, each with the file concerned and why."""

    entries: List[Tuple[str, str]] = field(default_factory=list)
    """(path, reason) in the order they were found."""

    def add(self, path: str, reason: str) -> None:
        self.entries.append((path, reason))

    def __len__(self) -> int:
        return len(self.entries)

    def counts(self) -> Dict[str, int]:
        """Number of skipped entries per reason, most frequent first."""
        return dict(Counter(reason for _, reason in self.entries).most_common())

    def summary(self, n_written: int) -> str:
        if not self.entries:
            return f"wrote {n_written} examples, skipped none"
        lines = [f"wrote {n_written} examples, skipped {len(self.entries)}:"]
        lines += [f"  {n} x {reason}" for reason, n in self.counts().items()]
        lines += [f"  skipped {path}: {reason}" for path, reason in self.entries[:SHOWN_SKIPS]]
        if len(self.entries) > SHOWN_SKIPS:
            lines.append(f"  ... and {len(self.entries) - SHOWN_SKIPS} more")
        return "\n".join(lines)

    def write(self, path: str) -> None:
        """Writes every skipped entry as ``path<TAB>reason`` lines with a header."""
        with open(path, "w", encoding="utf-8") as f:
            f.write("path\treason\n")
            f.writelines(f"{p}\t{r}\n" for p, r in self.entries)


# ---------------------------------------------------------------- header reads
def _probe(path: str) -> Tuple[str, Optional[int], Optional[str]]:
    try:
        frames = audio_info_frames(path)
    except AudioError as e:
        message = str(e)
        # AudioError messages start with the path; the report stores the path separately.
        return path, None, message[len(path) + 2:] if message.startswith(path + ": ") else message
    return path, frames, None


def _probe_chunk(paths: Sequence[str]) -> List[Tuple[str, Optional[int], Optional[str]]]:
    return [_probe(p) for p in paths]


def read_header_frames(
    paths: Sequence[str], workers: int = DEFAULT_WORKERS, quiet: bool = False, desc: str = "reading headers"
) -> Tuple[Dict[str, int], Dict[str, str]]:
    """16 kHz sample counts from file headers (no decoding), read by ``workers`` threads.

    Returns (frames by path, reason by path for files that cannot be used).
    """
    unique = list(dict.fromkeys(paths))
    # Each task is a chunk of files: one future per file costs more than a cached header read.
    chunks = [unique[i:i + CHUNK_FILES] for i in range(0, len(unique), CHUNK_FILES)]
    results = []
    bar = tqdm(total=len(unique), desc=desc, unit="file", disable=quiet, file=sys.stderr)
    with bar, ThreadPoolExecutor(max(1, workers)) as pool:
        for chunk in pool.map(_probe_chunk, chunks) if workers > 1 else map(_probe_chunk, chunks):
            results += chunk
            bar.update(len(chunk))
    frames = {p: n for p, n, _ in results if n is not None}
    errors = {p: e for p, _, e in results if e is not None}
    return frames, errors


# ---------------------------------------------------------------- prompts
@lru_cache(maxsize=1)
def prompt_pools() -> Dict[str, Tuple[str, ...]]:
    """Task name -> paraphrased prompts, from ``prompts.json``."""
    with open(PROMPTS_FILE, encoding="utf-8") as f:
        data = json.load(f)
    return {task: tuple(pool) for task, pool in data.items() if not task.startswith("_")}


def draw_prompt(task: str, key: str, seed: int, **fields: str) -> str:
    """One prompt of the task's pool, fixed by (seed, task, key) so skips and order do not change it."""
    pools = prompt_pools()
    if task not in pools:
        raise ValueError(f"no prompt pool for task {task!r}; pools in {PROMPTS_FILE}: {', '.join(pools)}")
    prompt = random.Random(f"{seed}/{task}/{key}").choice(pools[task])
    return prompt.format(**fields) if fields else prompt


# ---------------------------------------------------------------- rows
def clean_text(text: str) -> str:
    """Collapses runs of whitespace (tabs and newlines would break the TSV) into single spaces."""
    return " ".join(text.split())


def relative_audio_path(path: str, audio_root: str) -> str:
    """The path relative to the audio root when it lies inside it, else absolute."""
    path, root = os.path.abspath(path), os.path.abspath(audio_root)
    rel = os.path.relpath(path, root)
    return path if rel == ".." or rel.startswith(".." + os.sep) else rel


@dataclass
class Candidate:
    """One example before its audio headers are read."""

    id: str
    audio: List[str]
    """Paths of its audio files (absolute, or relative to the working directory); joined in time."""
    tgt_text: Optional[str]
    task: str
    prompt_fields: Dict[str, str] = field(default_factory=dict)
    """Placeholders of the task's prompt pool (sqa: question, options)."""
    prompt: Optional[str] = None
    """A fixed prompt instead of one drawn from the pool."""


def build_rows(
    candidates: Iterable[Candidate], audio_root: str, seed: int, report: SkipReport,
    workers: int = DEFAULT_WORKERS, quiet: bool = False, known_frames: Optional[Dict[str, int]] = None,
) -> List[ManifestRow]:
    """Reads every candidate's headers, skips (and reports) bad ones, draws prompts, makes rows.

    Ids must be unique per task: candidates of several tasks may share one id (and audio), and
    callers split the rows by ``row.task``. ``known_frames`` (16 kHz samples by path) spares
    header reads a caller has already done.
    """
    candidates = list(candidates)
    known = dict(known_frames or {})
    frames, errors = read_header_frames([p for c in candidates for p in c.audio if p not in known], workers, quiet)
    frames.update(known)
    rows, seen, reported = [], set(), set()
    for c in candidates:
        bad = [p for p in c.audio if p in errors]
        if bad:
            for p in bad:
                if p not in reported:  # a file shared by several candidates is reported once
                    report.add(p, errors[p])
                    reported.add(p)
            continue
        if (c.task, c.id) in seen:
            report.add(c.audio[0], f"duplicate id {c.id!r}")
            continue
        seen.add((c.task, c.id))
        prompt = c.prompt if c.prompt is not None else draw_prompt(c.task, c.id, seed, **c.prompt_fields)
        rows.append(ManifestRow(
            c.id, [relative_audio_path(p, audio_root) for p in c.audio], sum(frames[p] for p in c.audio),
            prompt, c.tgt_text, True, task=c.task,
        ))
    return rows


# ---------------------------------------------------------------- input and output files
def input_file(path: str) -> str:
    """``path``, when it is a file; otherwise the script ends with one line saying what it is."""
    if os.path.isdir(path):
        raise SystemExit(f"error: --input {path} is a folder; give the file that lists the corpus")
    if not os.path.isfile(path):
        raise SystemExit(f"error: --input {path}: no such file")
    return path


@contextmanager
def reading(path: str):
    """Ends the script with one line when ``path`` turns out not to be UTF-8 text."""
    try:
        yield
    except UnicodeDecodeError as e:
        raise SystemExit(f"error: {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x}); "
                         "save it as UTF-8") from None


@contextmanager
def writing(path: str):
    """Ends the script with one line when ``path`` cannot be written (a file where a folder
    should be, a read-only disk, no space)."""
    try:
        yield
    except OSError as e:
        where = f" ({e.filename})" if e.filename and e.filename != path else ""
        raise SystemExit(f"error: cannot write {path}: {e.strerror or e}{where}") from None


# ---------------------------------------------------------------- writing
@dataclass
class BuildResult:
    """What a script's ``main`` returns."""

    manifests: Dict[str, str]
    """Manifest name -> path written."""
    counts: Dict[str, int]
    """Manifest name -> rows written."""
    report: SkipReport
    skip_file: Optional[str]
    """Where the skipped entries were listed (None when nothing was skipped)."""


def write_outputs(
    outputs: Dict[str, Tuple[str, List[ManifestRow]]], report: SkipReport, skip_file: str,
) -> BuildResult:
    """Writes each manifest, lists the skips in ``skip_file`` and prints the summary.

    ``outputs`` maps a name to (path, rows). The summary goes to stderr even with --quiet:
    nothing may be dropped without a word. An empty result is an error, not a file.
    """
    total = sum(len(rows) for _, rows in outputs.values())
    if total == 0:
        print(report.summary(0), file=sys.stderr)
        raise SystemExit("error: no usable examples found; nothing written")
    paths, counts = {}, {}
    for name, (path, rows) in outputs.items():
        with writing(path):
            paths[name], counts[name] = path, write_manifest(path, rows)
        print(f"{path}: {counts[name]} examples", file=sys.stderr)
    with writing(skip_file):
        if report.entries:
            report.write(skip_file)
        elif os.path.exists(skip_file):
            os.remove(skip_file)  # a stale list from an earlier run would mislead
    summary = report.summary(total)
    if report.entries:
        summary += f"\n  full list: {skip_file}"
    print(summary, file=sys.stderr)
    return BuildResult(paths, counts, report, skip_file if report.entries else None)


def script_parser(doc: str, module: str) -> argparse.ArgumentParser:
    """A parser whose description is the module docstring's first paragraph and epilog the rest."""
    head, _, rest = doc.partition("\n\n")
    return argparse.ArgumentParser(prog=f"python -m {module}", description=head, epilog=rest,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common_args(parser: argparse.ArgumentParser, audio_root_default: str = "--root") -> None:
    """--audio-root (whose default, named by ``audio_root_default``, each script sets), --seed, --workers, --quiet."""
    parser.add_argument("--audio-root", help="manifest audio paths are written relative to this folder "
                                             f"(default: {audio_root_default})")
    parser.add_argument("--seed", type=int, default=0, help="seeds prompt drawing (and pairing where there is any)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="threads reading audio headers")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
