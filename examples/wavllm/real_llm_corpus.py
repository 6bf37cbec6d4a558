"""The demo's synthetic corpus with a wider prompt vocabulary, for the real-LLM recipe (``real_llm.py``).

Usage::

    python examples/wavllm/real_llm_corpus.py --out DIR [--seed 0] [--size tiny|cpu] [--workers 2]

Same speech, sentences, voices and targets as ``demo_corpus.py`` (whose planner and synthesiser it
uses); what changes are the instructions. Every task has a pool of wordings, split in two:

- training wordings (:data:`TRAINING_WORDINGS`), drawn at random for the train, valid and test
  splits;
- held-out wordings, used only by the ``test-heldout_<task>`` sets: for the single tasks the
  project's held-out rewordings (``manifests/eval_prompts.json``, the pool of
  ``python -m wavllm_fairseq.evaluate --prompt-variants``), for II and CoT
  :data:`HELD_OUT_WORDINGS`. Each held-out set re-asks the ``test_<task>`` set's rows (same audio,
  same reference) under the held-out wordings in turn, so the two scores differ only by wording.

Two combinations of instructions that training never asks for are held out too
(:data:`NEW_COMBINATIONS`, sets ``test-newcombo-<name>_ii``): transcribe and judge the speaking
rate; translate and answer a question about the content. They are scored as II replies (every
labelled part present and well-formed).

Layout: as ``demo_corpus.py`` (``DIR/audio``, ``DIR/manifests``, ``DIR/meta.jsonl``); the test
sets are ``test_<task>.tsv``, ``test-heldout_<task>.tsv`` and ``test-newcombo-<name>_ii.tsv``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Tuple

import demo_corpus
from demo_corpus import CorpusSize, Example

from wavllm_fairseq.data.manifest import write_manifest
from wavllm_fairseq.evaluation.prompts import DEFAULT_POOL, load_pool

TASKS = demo_corpus.STAGE1_TASKS + demo_corpus.STAGE2_TASKS

TRAINING_WORDINGS: Dict[str, List[str]] = {
    task: demo_corpus.PROMPTS[task] + extra for task, extra in {
        "asr": ["Convert the speech to text.", "Write out the spoken sentence.",
                "Tell me word for word what you hear."],
        "st": ["Say in German what the speaker says.", "Give a German translation of this recording.",
               "Translate this English sentence from the audio into German."],
        "sv": ["Is it the same voice throughout the clip? Answer yes or no.",
               "Do the two parts of the recording share one speaker?"],
        "rate": ["Is this person speaking slow, normal or fast?",
                 "What is the pace of the speech: slow, normal or fast?",
                 "Tell me the talking speed: slow, normal or fast."],
        "sqa": ["Based on the recording, answer. {question} {options}",
                "Answer using the audio. {question} {options}"],
        "ii": ["Transcribe the recording, and then answer: {question} {options}",
               "Give the transcript first, then the answer to this question. {question} {options}"],
        "cot": ["Transcribe the audio, then translate your transcript into German.",
                "Write the transcript, then its German translation."],
    }.items()
}
"""Task -> instruction wordings of training (the demo's pool and a few more). sqa and ii wordings
get the example's ``{question}`` and ``{options}``."""

HELD_OUT_WORDINGS: Dict[str, List[str]] = {
    "ii": ["Two tasks for you. Write down the spoken words, then pick an answer. {question} {options}",
           "Start with a verbatim transcript of the speech and finish with your answer. {question} {options}"],
    "cot": ["Put the spoken words on paper, and after that render them in German.",
            "Reason step by step: first the English words you hear, then the same sentence in German."],
}
"""II and CoT wordings used only at test time (the single tasks' come from eval_prompts.json)."""
N_HELD_OUT = 3
"""Held-out wordings per single task taken from eval_prompts.json (the first ones)."""


@dataclass(frozen=True)
class Combination:
    wordings: Tuple[str, ...]
    target: str
    """Target format; fields: transcript, translation, answer."""


NEW_COMBINATIONS: Dict[str, Combination] = {
    "rate": Combination(
        ("Transcribe the clip, then say whether the speaker talks slow, normal or fast.",
         "Write down the words you hear, and also tell me if the speech is slow, normal or fast."),
        "Transcript: {transcript} Answer: {answer}"),
    "translate-answer": Combination(
        ("Translate the speech into German, then answer this question: {question} {options}",
         "Give the German translation of what is said, then answer. {question} {options}"),
        "Translation: {translation} Answer: {answer}"),
}
"""Held-out instruction combinations (test only), scored as II replies."""


SIZES = {  # test: rows per test set (each held-out set re-asks the same rows)
    "tiny": CorpusSize(train={t: 4 for t in TASKS}, valid=2, test=2),
    "cpu": CorpusSize(train={t: 80 for t in TASKS}, valid=5, test=10),
    "cpu_large": CorpusSize(train={t: 400 for t in TASKS}, valid=10, test=30),
}
"""tiny: the tests' plumbing check; cpu: the 90-minute CPU recipe; cpu_large: five times the
training sentences (stage 1 memorised cpu's 80 per task: training loss far below validation loss)
and three times the test rows, for longer runs."""


def held_out_wordings() -> Dict[str, List[str]]:
    """Task -> wordings used only at test time."""
    pool = load_pool(DEFAULT_POOL)
    return {**{t: pool[t][:N_HELD_OUT] for t in demo_corpus.STAGE1_TASKS}, **HELD_OUT_WORDINGS}


def question_and_options(prompt: str) -> Tuple[str, str]:
    """The demo question and its ``Options: ...`` run inside an sqa or ii prompt."""
    question = next(q for q, _ in demo_corpus.SQA_QUESTIONS.values() if q in prompt)
    return question, prompt[prompt.index("Options:"):]


def reworded(example: Example, wording: str) -> Example:
    """The example asked with ``wording`` (same audio, same target)."""
    if "{options}" in wording:
        question, options = question_and_options(example.prompt)
        wording = wording.format(question=question, options=options)
    return replace(example, prompt=wording)


def plan_combination(name: str, n: int, seed: int) -> List[Example]:
    """``n`` test examples of a held-out instruction combination (test voices and word pairs)."""
    combination = NEW_COMBINATIONS[name]
    if name == "rate":  # the rate task's clips: three speaking rates
        source = demo_corpus.plan_task("rate", "test", n, seed)
        fields = [dict(transcript=e.utterances[0].text, answer=e.target) for e in source]
    else:  # translate-answer: questions from ii's planner, translations from the sentence's German
        source = demo_corpus.plan_task("ii", "test", n, seed)
        fields = [dict(translation=translate(e.utterances[0].text), answer=e.target.rsplit("Answer: ", 1)[1])
                  for e in source]
    examples = []
    for i, (e, values) in enumerate(zip(source, fields)):
        wording = combination.wordings[i % len(combination.wordings)]
        if "{options}" in wording:
            question, options = question_and_options(e.prompt)
            wording = wording.format(question=question, options=options)
        examples.append(replace(e, prompt=wording, target=combination.target.format(**values)))
    return examples


def translate(english: str) -> str:
    """The German of a demo sentence (inverse of its English rendering)."""
    return parse_sentence(english).german()


def parse_sentence(english: str) -> "demo_corpus.Sentence":
    """The demo Sentence behind an English sentence of its grammar."""
    words = english.split()
    subject_definite = words[0] == "the"
    i = 1
    size = words[i] if words[i] in demo_corpus.SIZES else None
    i += size is not None
    animal, verb = words[i], words[i + 1]
    object_definite = words[i + 2] == "the"
    color, thing = words[i + 3], words[i + 4]
    place = " ".join(words[i + 5:]) or None
    return demo_corpus.Sentence(subject_definite, size, animal, verb, object_definite, color, thing, place)


def plan_corpus(seed: int, size: str) -> Dict[str, List[Example]]:
    """Manifest name (``train_asr``, ``test-heldout_st``, ...) -> its examples."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    sizes = SIZES[size]
    held_out = held_out_wordings()
    plan: Dict[str, List[Example]] = {}
    for task in TASKS:
        rng = random.Random(f"{seed}/wordings/{task}")
        for split, n in (("train", sizes.train[task]), ("valid", sizes.valid), ("test", sizes.test)):
            plan[f"{split}_{task}"] = [reworded(e, rng.choice(TRAINING_WORDINGS[task]))
                                       for e in demo_corpus.plan_task(task, split, n, seed)]
        wordings = held_out[task]
        plan[f"test-heldout_{task}"] = [reworded(e, wordings[i % len(wordings)])
                                        for i, e in enumerate(plan[f"test_{task}"])]
    for name in NEW_COMBINATIONS:
        plan[f"test-newcombo-{name}_ii"] = plan_combination(name, sizes.test, seed)
    return plan


def build_corpus(out: str, seed: int = 0, size: str = "tiny", workers: int = 1, quiet: bool = True) -> Dict[str, str]:
    """Plans, synthesises and writes the corpus under ``out``; returns manifest name -> path."""
    plan = plan_corpus(seed, size)
    clips: Dict[str, Example] = {}
    for examples in plan.values():
        for e in examples:
            clips.setdefault(e.audio, e)  # re-worded test sets share their clips
    frames_by_id = demo_corpus._synthesize_all(list(clips.values()), os.path.join(out, "audio"), workers, quiet)
    frames = {audio: frames_by_id[e.id] for audio, e in clips.items()}
    paths = {}
    os.makedirs(os.path.join(out, "manifests"), exist_ok=True)
    for name, examples in plan.items():
        paths[name] = os.path.join(out, "manifests", name + ".tsv")
        rows = demo_corpus._rows(examples, {e.id: frames[e.audio] for e in examples})
        for row in rows:  # a held-out combination reuses another task's clips but is scored as ii
            row.task = name.rsplit("_", 1)[1]
        write_manifest(paths[name], rows)
    with open(os.path.join(out, "meta.jsonl"), "w", encoding="utf-8") as f:
        for name, examples in plan.items():
            for e in examples:
                f.write(json.dumps({"manifest": name, **asdict(e), "n_frames": frames[e.audio]},
                                   ensure_ascii=False) + "\n")
    return paths


def main(argv: Optional[List[str]] = None) -> Dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(SIZES), default="cpu")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="synthesis processes")
    args = parser.parse_args(argv)
    paths = build_corpus(args.out, args.seed, args.size, args.workers, quiet=False)
    print(f"{len(paths)} manifests in {os.path.join(args.out, 'manifests')}", file=sys.stderr)
    return paths


if __name__ == "__main__":
    main()
