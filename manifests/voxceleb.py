"""VoxCeleb -> speaker-verification manifest: is there only one speaker in the clip?

Reads ``<root>/wav/<speaker id>/<video id>/<utt>.wav`` (VoxCeleb1 layout; VoxCeleb2 after
conversion to wav). Each example joins two utterances in time: of one speaker (target "Yes",
two different utterances) or of two speakers ("No"); half of each, seeded, no pair twice.
The prompt is drawn from the ``sv`` paraphrases.

``--mode multi`` writes both paths in the row's audio field (joined by ``|``; the data loader
concatenates them); ``--mode concat`` writes each pair as one 16 kHz wav under --concat-dir.

    python -m manifests.voxceleb --root vox1_test_wav --n-pairs 4000 --mode multi --out data/test_sv.tsv
"""
from __future__ import annotations

import os
import random
from typing import Dict, List, Optional, Tuple

import numpy as np
import soundfile
from tqdm import tqdm

from manifests.common import (
    BuildResult, Candidate, SkipReport, add_common_args, build_rows, read_header_frames, script_parser, writing,
    write_outputs,
)
from wavllm_fairseq.data.audio import SAMPLE_RATE, AudioError, load_audio

TASK = "sv"
ANSWERS = ("Yes", "No")
MAX_DRAWS_PER_PAIR = 100
"""Redraws allowed when a drawn pair was already used, before concluding the corpus is too small."""


def scan(root: str, report: SkipReport, workers: int, quiet: bool) -> Tuple[Dict[str, List[str]], Dict[str, int]]:
    """Usable utterances per speaker (sorted) and their 16 kHz lengths."""
    wav_dir = os.path.join(root, "wav")
    if not os.path.isdir(wav_dir):
        raise SystemExit(f"error: {wav_dir} not found (expected <root>/wav/<speaker>/<video>/<utt>.wav)")
    paths = []
    for speaker in sorted(os.listdir(wav_dir)):
        speaker_dir = os.path.join(wav_dir, speaker)
        for video in sorted(os.listdir(speaker_dir)) if os.path.isdir(speaker_dir) else []:
            video_dir = os.path.join(speaker_dir, video)
            if os.path.isdir(video_dir):
                paths += [os.path.join(video_dir, f) for f in sorted(os.listdir(video_dir)) if f.endswith(".wav")]
    frames, errors = read_header_frames(paths, workers, quiet)
    by_speaker: Dict[str, List[str]] = {}
    for path in paths:
        if path in errors:
            report.add(path, errors[path])
        else:
            by_speaker.setdefault(os.path.basename(os.path.dirname(os.path.dirname(path))), []).append(path)
    return by_speaker, frames


def draw_pairs(by_speaker: Dict[str, List[str]], n_pairs: int, seed: int) -> List[Tuple[str, str, str]]:
    """``n_pairs`` (first, second, answer) triples, answers balanced and shuffled, no pair repeated."""
    rng = random.Random(f"{seed}/{TASK}/pairs")
    speakers = sorted(by_speaker)
    multi = [s for s in speakers if len(by_speaker[s]) >= 2]
    answers = [ANSWERS[i % 2] for i in range(n_pairs)]
    rng.shuffle(answers)
    if "Yes" in answers and not multi:
        raise SystemExit("error: no speaker has two usable utterances, so no 'Yes' pair can be made")
    if "No" in answers and len(speakers) < 2:
        raise SystemExit("error: fewer than two speakers with usable utterances, so no 'No' pair can be made")
    pairs, used = [], set()
    for answer in answers:
        for _ in range(MAX_DRAWS_PER_PAIR):
            if answer == "Yes":
                first, second = rng.sample(by_speaker[rng.choice(multi)], 2)
            else:
                a, b = rng.sample(speakers, 2)
                first, second = rng.choice(by_speaker[a]), rng.choice(by_speaker[b])
            if (first, second) not in used:
                break
        else:
            raise SystemExit(f"error: cannot draw {n_pairs} distinct pairs from this corpus; ask for fewer")
        used.add((first, second))
        pairs.append((first, second, answer))
    return pairs


def write_concatenated(pairs: List[Tuple[str, str, str]], ids: List[str], concat_dir: str, report: SkipReport,
                       quiet: bool) -> Tuple[List[Candidate], Dict[str, int]]:
    """Writes each pair as one 16 kHz PCM wav; returns its candidates and their lengths."""
    with writing(concat_dir):
        os.makedirs(concat_dir, exist_ok=True)
    candidates, frames = [], {}
    for example_id, (first, second, answer) in tqdm(list(zip(ids, pairs)), desc="concatenating", unit="pair",
                                                    disable=quiet):
        try:
            wave = load_audio([first, second]).numpy()
        except AudioError as e:
            report.add(f"{first}|{second}", str(e))
            continue
        path = os.path.join(concat_dir, example_id + ".wav")
        soundfile.write(path, np.clip(wave, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
        frames[path] = len(wave)
        candidates.append(Candidate(example_id, [path], answer, TASK))
    return candidates, frames


def main(argv: Optional[List[str]] = None) -> BuildResult:
    parser = script_parser(__doc__, "manifests.voxceleb")
    parser.add_argument("--root", required=True, help="the VoxCeleb folder holding wav/")
    parser.add_argument("--out", required=True, help="manifest to write (skips go to <out stem>.skipped.tsv)")
    parser.add_argument("--n-pairs", type=int, required=True, help="examples to make (half Yes, half No)")
    parser.add_argument("--mode", choices=("multi", "concat"), default="multi",
                        help="multi: two paths per row; concat: write joined wav files to --concat-dir")
    parser.add_argument("--concat-dir", help="folder for the joined wav files (--mode concat); also the default "
                                             "--audio-root then")
    add_common_args(parser, "--root; --concat-dir with --mode concat")
    args = parser.parse_args(argv)
    if args.mode == "concat" and not args.concat_dir:
        parser.error("--mode concat needs --concat-dir")
    report = SkipReport()
    by_speaker, frames = scan(args.root, report, args.workers, args.quiet)
    pairs = draw_pairs(by_speaker, args.n_pairs, args.seed)
    ids = [f"{TASK}-{i:06d}" for i in range(len(pairs))]
    if args.mode == "multi":
        candidates = [Candidate(i, [a, b], answer, TASK) for i, (a, b, answer) in zip(ids, pairs)]
        audio_root = args.audio_root or args.root
    else:
        candidates, frames = write_concatenated(pairs, ids, args.concat_dir, report, args.quiet)
        audio_root = args.audio_root or args.concat_dir
    rows = build_rows(candidates, audio_root, args.seed, report, args.workers, args.quiet, known_frames=frames)
    name = os.path.splitext(os.path.basename(args.out))[0]
    return write_outputs({name: (args.out, rows)}, report, os.path.splitext(args.out)[0] + ".skipped.tsv")


if __name__ == "__main__":
    main()
