"""Multiple-choice spoken question answering -> SQA manifest.

Input: a JSON file (a list of objects) or a TSV with a header, one question per entry:

- ``audio``: path of the recording (relative paths are taken from --audio-base, default the
  input's folder);
- ``question``: the question text;
- ``options``: a list, or one string with the options separated by ``|``;
- ``answer``: the right option's letter (A, B, ...) or its text;
- ``id`` (optional): the example id, else ``sqa-<entry number>``.

The prompt is drawn from the ``sqa`` paraphrases with the question and the lettered options
("A. ... B. ..."); the target is the letter and the option, e.g. ``B. in the library``.

    python -m manifests.sqa --input gaokao_listening.json --out data/test_sqa.tsv
"""
from __future__ import annotations

import csv
import json
import os
import string
from typing import Dict, List, Optional, Sequence, Union

from manifests.common import (
    BuildResult, Candidate, SkipReport, add_common_args, build_rows, clean_text, input_file, reading, script_parser,
    write_outputs,
)

TASK = "sqa"
OPTION_SEPARATOR = "|"
LETTERS = string.ascii_uppercase


def read_entries(path: str) -> List[Dict[str, object]]:
    """The input's entries as dicts, from JSON (a list of objects) or a TSV with a header."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8-sig") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise SystemExit(f"error: {path}: not JSON ({e})") from None
        if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
            raise SystemExit(f"error: {path} must hold a JSON list of objects")
        return data
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheets start with a byte-order mark
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def parse_options(value: Union[str, Sequence[str], None]) -> List[str]:
    items = value.split(OPTION_SEPARATOR) if isinstance(value, str) else list(value or [])
    return [clean_text(str(o)) for o in items if clean_text(str(o))]


def resolve_answer(answer: str, options: List[str]) -> Optional[int]:
    """Index of the right option from a letter ("B", "b", "B.") or the option's text; None if neither."""
    text = clean_text(answer)
    letter = text.rstrip(".").upper()
    if len(letter) == 1 and letter in LETTERS[: len(options)]:
        return LETTERS.index(letter)
    lowered = [o.lower() for o in options]
    return lowered.index(text.lower()) if text.lower() in lowered else None


def entry_candidate(entry: Dict[str, object], number: int, audio_base: str, where: str,
                    report: SkipReport) -> Optional[Candidate]:
    audio = clean_text(str(entry.get("audio") or ""))
    question = clean_text(str(entry.get("question") or ""))
    options = parse_options(entry.get("options"))
    answer = clean_text(str(entry.get("answer") or ""))
    problems = [f"no {name}" for name, value in (("audio", audio), ("question", question), ("answer", answer))
                if not value]
    if len(options) < 2:
        problems.append(f"needs at least 2 options, got {len(options)}")
    if problems:
        report.add(where, "; ".join(problems))
        return None
    index = resolve_answer(answer, options)
    path = os.path.join(audio_base, audio)
    if index is None:
        report.add(path, f"answer {answer!r} is neither a letter A-{LETTERS[len(options) - 1]} nor one of the options")
        return None
    lettered = " ".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(options))
    example_id = clean_text(str(entry.get("id") or "")) or f"{TASK}-{number:06d}"
    return Candidate(example_id, [path], f"{LETTERS[index]}. {options[index]}", TASK,
                     prompt_fields={"question": question, "options": lettered})


def main(argv: Optional[List[str]] = None) -> BuildResult:
    parser = script_parser(__doc__, "manifests.sqa")
    parser.add_argument("--input", required=True, help="a .json list of objects, or a .tsv with a header")
    parser.add_argument("--out", required=True, help="manifest to write (skips go to <out stem>.skipped.tsv)")
    parser.add_argument("--audio-base", help="folder that relative audio paths of the input start from "
                                             "(default: the input's folder)")
    add_common_args(parser, "--audio-base")
    args = parser.parse_args(argv)
    audio_base = args.audio_base or os.path.dirname(os.path.abspath(args.input))
    report = SkipReport()
    candidates = []
    with reading(input_file(args.input)):
        entries = read_entries(args.input)
    for number, entry in enumerate(entries):
        candidate = entry_candidate(entry, number, audio_base, f"{args.input} entry {number}", report)
        if candidate:
            candidates.append(candidate)
    rows = build_rows(candidates, args.audio_root or audio_base, args.seed, report, args.workers, args.quiet)
    name = os.path.splitext(os.path.basename(args.out))[0]
    return write_outputs({name: (args.out, rows)}, report, os.path.splitext(args.out)[0] + ".skipped.tsv")


if __name__ == "__main__":
    main()
