"""Shared body of ``from_jsonl`` and ``from_csv``: one manifest row per input record.

Fields are mapped by flags. The audio field holds one path, a list of paths (JSON) or paths
joined by ``|``; relative ones start from --audio-base (default: the input's folder). Without
--text-field the manifest has no targets (an inference-only set). The prompt is fixed with
--prompt, or drawn per example from the pool of --task in ``manifests/prompts.json``.
"""
from __future__ import annotations

import argparse
import os
from typing import Callable, Dict, Iterable, List, Optional

from manifests.common import (
    BuildResult, Candidate, SkipReport, add_common_args, build_rows, clean_text, input_file, prompt_pools, reading,
    script_parser, write_outputs,
)
from wavllm_fairseq.data.manifest import AUDIO_SEPARATOR

Records = Callable[[argparse.Namespace], Iterable[Dict[str, object]]]
"""Reads the input named by the parsed flags; yields one dict per record."""


def audio_paths(value: object) -> List[str]:
    items = value if isinstance(value, list) else str(value or "").split(AUDIO_SEPARATOR)
    return [clean_text(str(p)) for p in items if clean_text(str(p))]


def make_parser(doc: str, module: str) -> argparse.ArgumentParser:
    parser = script_parser(doc, module)
    parser.add_argument("--input", required=True)
    parser.add_argument("--out", required=True, help="manifest to write (skips go to <out stem>.skipped.tsv)")
    parser.add_argument("--audio-field", default="audio", help="field with the audio path(s)")
    parser.add_argument("--text-field", help="field with the target text (omit for an inference-only set)")
    parser.add_argument("--id-field", help="field with the example id (default: <task>-<record number>)")
    parser.add_argument("--task", help="task name (manifest task column); its pool in prompts.json gives the "
                                       "prompts unless --prompt is set")
    parser.add_argument("--prompt", help="one fixed prompt for every example")
    parser.add_argument("--audio-base", help="folder that relative audio paths of the input start from "
                                             "(default: the input's folder)")
    add_common_args(parser, "--audio-base")
    return parser


def run(parser: argparse.ArgumentParser, read_records: Records, argv: Optional[List[str]]) -> BuildResult:
    args = parser.parse_args(argv)
    if not args.task:
        parser.error("--task is required (it names the task, and its prompt pool unless --prompt is given)")
    if args.prompt is None and args.task not in prompt_pools():
        parser.error(f"no prompt pool for --task {args.task!r} (pools: {', '.join(prompt_pools())}); "
                     f"add one to manifests/prompts.json or pass --prompt")
    input_file(args.input)
    audio_base = args.audio_base or os.path.dirname(os.path.abspath(args.input))
    report = SkipReport()
    candidates = []
    with reading(args.input):
        records = list(read_records(args))
    for number, record in enumerate(records):
        where = f"{args.input} record {number}"
        paths = [os.path.join(audio_base, p) for p in audio_paths(record.get(args.audio_field))]
        text = clean_text(str(record.get(args.text_field) or "")) if args.text_field else None
        example_id = clean_text(str(record.get(args.id_field) or "")) if args.id_field else f"{args.task}-{number:06d}"
        if not paths:
            report.add(where, f"no audio in field {args.audio_field!r}")
        elif text == "":
            report.add(paths[0], f"empty text in field {args.text_field!r} ({where})")
        elif not example_id:
            report.add(paths[0], f"empty id in field {args.id_field!r} ({where})")
        else:
            candidates.append(Candidate(example_id, paths, text, args.task, prompt=args.prompt))
    rows = build_rows(candidates, args.audio_root or audio_base, args.seed, report, args.workers, args.quiet)
    name = os.path.splitext(os.path.basename(args.out))[0]
    return write_outputs({name: (args.out, rows)}, report, os.path.splitext(args.out)[0] + ".skipped.tsv")
