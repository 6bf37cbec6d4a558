"""Stage-2 manifests from single-task ones: II-task and CoT-task rows on the same audio.

- ``--mode ii`` (independent instructions): the two rows' own prompts chained in one prompt
  (``ii`` paraphrases, e.g. "{first} Then: {second}"), target
  "<label>: <first target> <label>: <second target>" with labels per task (TARGET_LABELS).
- ``--mode cot`` (chain of thought): --first holds transcripts and --second translations of the
  same audio (e.g. ``manifests.covost2 --tasks asr st``); the prompt asks to transcribe, then
  translate the transcript (``cot`` paraphrases); target "Transcript: ... Translation: ...".

Rows are paired by identical audio paths (--match audio) or by id (--match id; the audio must
then agree too). Rows left without a partner, on either side, are listed in the skip report.

    python -m manifests.combine --mode cot --first data/train_asr.tsv --second data/train_st.tsv \\
        --out data/train_cot.tsv
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from manifests.common import BuildResult, SkipReport, draw_prompt, script_parser, write_outputs
from wavllm_fairseq.data.manifest import ManifestError, ManifestRow, read_manifest

TARGET_LABELS = {"asr": "Transcript", "st": "Translation", "sv": "Answer", "er": "Emotion", "sqa": "Answer"}
"""Task -> the label its part of a combined target starts with."""
DEFAULT_LABEL = "Answer"
"""Label for rows whose task column is absent or not in TARGET_LABELS."""
COT_TARGET = "Transcript: {first} Translation: {second}"


def _load(path: str) -> List[ManifestRow]:
    try:
        return read_manifest(path)
    except (ManifestError, OSError) as e:
        raise SystemExit(f"error: {e}") from None


def _key(row: ManifestRow, match: str):
    return row.id if match == "id" else tuple(row.audio)


def pair_rows(first: List[ManifestRow], second: List[ManifestRow], first_path: str, second_path: str,
              match: str, report: SkipReport) -> List[Tuple[ManifestRow, ManifestRow]]:
    """Rows of ``first`` with their partner in ``second``; every unpaired row is reported."""
    partners: Dict[object, ManifestRow] = {}
    for row in second:
        key = _key(row, match)
        if key in partners:
            report.add(f"{second_path}:{row.line}",
                       f"same {match} as line {partners[key].line}; only the first is used")
        else:
            partners[key] = row
    pairs, used = [], set()
    for row in first:
        where = f"{first_path}:{row.line}"
        partner = partners.get(_key(row, match))
        if partner is None:
            report.add(where, f"no row with the same {match} in {second_path}")
        elif partner.audio != row.audio:
            report.add(where, f"id {row.id!r} has different audio in {second_path} line {partner.line}")
        elif not row.with_speech or not row.tgt_text or not partner.tgt_text:
            report.add(where, "both rows need audio and a target")
        else:
            pairs.append((row, partner))
            used.add(partner.line)
    for row in second:
        # duplicates were reported above; here: rows whose partner never came
        if row.line not in used and partners.get(_key(row, match)) is row:
            report.add(f"{second_path}:{row.line}", f"no usable partner in {first_path}")
    return pairs


def _label(row: ManifestRow) -> str:
    return TARGET_LABELS.get(row.task or "", DEFAULT_LABEL)


def combine(pairs: List[Tuple[ManifestRow, ManifestRow]], mode: str, seed: int) -> List[ManifestRow]:
    rows = []
    for a, b in pairs:
        example_id = f"{mode}-{a.id}"
        if mode == "ii":
            prompt = draw_prompt("ii", example_id, seed, first=a.prompt, second=b.prompt)
            target = f"{_label(a)}: {a.tgt_text} {_label(b)}: {b.tgt_text}"
        else:
            prompt = draw_prompt("cot", example_id, seed)
            target = COT_TARGET.format(first=a.tgt_text, second=b.tgt_text)
        rows.append(ManifestRow(example_id, list(a.audio), a.n_frames, prompt, target, True, task=mode))
    return rows


def main(argv: Optional[List[str]] = None) -> BuildResult:
    parser = script_parser(__doc__, "manifests.combine")
    parser.add_argument("--mode", choices=("ii", "cot"), required=True)
    parser.add_argument("--first", required=True, help="manifest of the first instruction (cot: transcripts)")
    parser.add_argument("--second", required=True, help="manifest of the second instruction (cot: translations)")
    parser.add_argument("--out", required=True, help="manifest to write (skips go to <out stem>.skipped.tsv)")
    parser.add_argument("--match", choices=("audio", "id"), default="audio", help="how rows are paired")
    parser.add_argument("--seed", type=int, default=0, help="seeds prompt drawing")
    args = parser.parse_args(argv)
    report = SkipReport()
    pairs = pair_rows(_load(args.first), _load(args.second), args.first, args.second, args.match, report)
    name = os.path.splitext(os.path.basename(args.out))[0]
    rows = combine(pairs, args.mode, args.seed)
    return write_outputs({name: (args.out, rows)}, report, os.path.splitext(args.out)[0] + ".skipped.tsv")


if __name__ == "__main__":
    main()
