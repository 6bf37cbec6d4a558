"""A small synthetic WavLLM corpus spoken by eSpeak NG voices, for the CPU demo and tests.

Usage::

    python examples/wavllm/demo_corpus.py --out DIR [--seed 0] [--size tiny|demo] [--workers 2] [--quiet]

Layout (train with ``--audio-root DIR/audio``; manifest paths are relative to it)::

    DIR/audio/<task>/<split>/<id>.wav         16 kHz mono
    DIR/manifests/{train,valid,test}_<task>.tsv   one manifest per task and split; the recipes
                                              mix them (stage 1: the single tasks; stage 2: ii and
                                              cot plus a replay of the single tasks)
    DIR/text_corpus.txt                       every prompt and target once (for a SentencePiece model)
    DIR/meta.jsonl                            per example: voices, rates, pitches, texts, word combinations

Sentences follow one grammar over ~60 English words, e.g. "the small cat sees a red ball at home":
``DET [SIZE] ANIMAL VERB DET COLOR THING [PLACE]`` (6-8 words). The German translation is
produced by rule (gender, case and adjective endings), so it is deterministic:
"Die kleine Katze sieht einen roten Ball zu Hause".

Tasks and targets:

- ``asr``: the English sentence, lower case, no punctuation.
- ``st``: its German translation.
- ``sv``: two utterances joined by a pause; "Yes" if one speaker said both, else "No" (balanced).
  Speakers have a low or a high base pitch, and a "No" clip joins one of each: a voice change
  that a model trained for minutes on a CPU can learn.
- ``rate``: speaking rate, standing in for emotion recognition: "slow" (80-100 words per minute),
  "normal" (165-190) or "fast" (280-320), balanced. Chosen over pitch because eSpeak voices
  differ in base pitch (male/female variants), while rate classes this far apart do not overlap.
- ``sqa``: a question about the sentence (its animal, colour, object or verb) with four options
  in the prompt, e.g. "Options: cat, dog, fox, pig."; the target is the right option, e.g. "dog"
  (its place among the options balanced).
- ``ii`` (stage 2): transcribe, then answer an sqa question; target
  "Transcript: <sentence> Answer: <option>".
- ``cot`` (stage 2): transcribe, then translate the transcript; target
  "Transcript: <sentence> Translation: <German>".

The test split is spoken by voices no train/valid example uses, and its sentences only use
(animal, object) pairs that train/valid never contain (every single word is seen in training).
Prompts are drawn from a few paraphrases per task (PROMPTS below), the same pool for every split.
Everything is seeded: the same seed and size give byte-identical files for any --workers.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import soundfile

from wavllm_fairseq.data.manifest import ManifestRow, write_manifest

SAMPLE_RATE = 16000
PAUSE_SECONDS = 0.4
"""Silence between the two utterances of an sv clip."""

# ---------------------------------------------------------------- vocabulary and grammar
ANIMALS = {  # English -> (German, gender)
    "cat": ("Katze", "f"), "dog": ("Hund", "m"), "bird": ("Vogel", "m"), "fish": ("Fisch", "m"),
    "horse": ("Pferd", "n"), "mouse": ("Maus", "f"), "cow": ("Kuh", "f"), "sheep": ("Schaf", "n"),
    "duck": ("Ente", "f"), "frog": ("Frosch", "m"), "fox": ("Fuchs", "m"), "pig": ("Schwein", "n"),
}
THINGS = {
    "ball": ("Ball", "m"), "box": ("Kiste", "f"), "apple": ("Apfel", "m"), "hat": ("Hut", "m"),
    "car": ("Auto", "n"), "book": ("Buch", "n"), "cup": ("Tasse", "f"), "key": ("Schlüssel", "m"),
    "bag": ("Tasche", "f"), "chair": ("Stuhl", "m"), "bed": ("Bett", "n"), "boat": ("Boot", "n"),
    "lamp": ("Lampe", "f"), "door": ("Tür", "f"), "shoe": ("Schuh", "m"), "bike": ("Fahrrad", "n"),
}
SIZES = {"small": "klein", "big": "groß", "old": "alt", "young": "jung", "happy": "glücklich", "tired": "müde"}
COLORS = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "black": "schwarz",
          "white": "weiß", "brown": "braun", "gray": "grau"}
VERBS = {"sees": "sieht", "likes": "mag", "finds": "findet", "has": "hat", "wants": "will",
         "needs": "braucht", "takes": "nimmt", "carries": "trägt"}
PLACES = {"at home": "zu Hause", "at school": "in der Schule", "in town": "in der Stadt",
          "outside": "draußen", "at night": "in der Nacht"}

# German articles and strong/weak adjective endings by (definite, case, gender).
_ARTICLES = {
    (True, "nom"): {"m": "der", "f": "die", "n": "das"}, (True, "acc"): {"m": "den", "f": "die", "n": "das"},
    (False, "nom"): {"m": "ein", "f": "eine", "n": "ein"}, (False, "acc"): {"m": "einen", "f": "eine", "n": "ein"},
}
_ENDINGS = {
    (True, "nom"): {"m": "e", "f": "e", "n": "e"}, (True, "acc"): {"m": "en", "f": "e", "n": "e"},
    (False, "nom"): {"m": "er", "f": "e", "n": "es"}, (False, "acc"): {"m": "en", "f": "e", "n": "es"},
}


def _german_adjective(stem: str, ending: str) -> str:
    return stem + (ending[1:] if stem.endswith("e") else ending)  # müde + e -> müde


def _english_np(definite: bool, adjective: Optional[str], noun: str) -> str:
    first = adjective or noun
    article = "the" if definite else ("an" if first[0] in "aeiou" else "a")
    return " ".join(w for w in (article, adjective, noun) if w)


def _german_np(definite: bool, case: str, adjective: Optional[str], noun: str, gender: str) -> str:
    words = [_ARTICLES[definite, case][gender]]
    if adjective:
        words.append(_german_adjective(adjective, _ENDINGS[definite, case][gender]))
    return " ".join(words + [noun])


@dataclass(frozen=True)
class Sentence:
    subject_definite: bool
    size: Optional[str]
    animal: str
    verb: str
    object_definite: bool
    color: str
    thing: str
    place: Optional[str]

    @property
    def combination(self) -> Tuple[str, str]:
        """The (animal, object) pair; test sentences use pairs training never sees."""
        return self.animal, self.thing

    def english(self) -> str:
        words = [_english_np(self.subject_definite, self.size, self.animal), self.verb,
                 _english_np(self.object_definite, self.color, self.thing)]
        return " ".join(words + ([self.place] if self.place else []))

    def german(self) -> str:
        noun, gender = ANIMALS[self.animal]
        thing, thing_gender = THINGS[self.thing]
        words = [_german_np(self.subject_definite, "nom", SIZES.get(self.size), noun, gender), VERBS[self.verb],
                 _german_np(self.object_definite, "acc", COLORS[self.color], thing, thing_gender)]
        text = " ".join(words + ([PLACES[self.place]] if self.place else []))
        return text[0].upper() + text[1:]


def is_held_out(animal: str, thing: str) -> bool:
    """About one (animal, object) pair in five is reserved for the test split."""
    return (3 * list(ANIMALS).index(animal) + list(THINGS).index(thing)) % 5 == 0


def sample_sentence(rng: random.Random, held_out: bool) -> Sentence:
    """A random sentence whose (animal, object) pair is held out (test) or not (train/valid)."""
    while True:
        animal, thing = rng.choice(list(ANIMALS)), rng.choice(list(THINGS))
        if is_held_out(animal, thing) == held_out:
            break
    extra = rng.choice(["none", "size", "place"])  # at most one optional part keeps it at 6-8 words
    return Sentence(
        subject_definite=rng.random() < 0.5, size=rng.choice(list(SIZES)) if extra == "size" else None,
        animal=animal, verb=rng.choice(list(VERBS)), object_definite=rng.random() < 0.5,
        color=rng.choice(list(COLORS)), thing=thing, place=rng.choice(list(PLACES)) if extra == "place" else None,
    )


# ---------------------------------------------------------------- voices
TRAIN_VOICES = (
    "en-us", "en-us+m1", "en-us+m3", "en-us+f1", "en-us+f3", "en+m2", "en+m4", "en+m6", "en+f2", "en+f4",
    "en-gb-scotland+m5", "en-gb-x-rp+m7", "en-029+m2", "en-gb-x-rp+f3", "en-us-nyc+m4", "en-gb-scotland+f4",
)
TEST_VOICES = ("en-us+f2", "en+m3", "en-gb-scotland+f1", "en-029+m7")
"""Voices of the test split only."""
SPEAKER_PITCH_RANGES = ((35, 45), (55, 65))
"""Low and high base pitches (eSpeak's 0-99 scale): speakers alternate between the two."""
NORMAL_RATE_RANGE = (150, 200)
"""Words per minute for every task but ``rate``."""
RATE_CLASSES = {"slow": (80, 100), "normal": (165, 190), "fast": (280, 320)}
SPEECH_ONLY_ANSWERS = {"sv": ("Yes", "No"), "rate": tuple(RATE_CLASSES)}
"""Tasks whose answer only the sound tells (not the words), and their answers."""


@dataclass(frozen=True)
class Speaker:
    voice: str
    pitch: int


def speakers(seed: int, split: str) -> List[Speaker]:
    """The split's speakers: an eSpeak voice with a fixed pitch (the same for train and valid)."""
    rng = random.Random(f"{seed}/speakers")
    pitches = {v: rng.randint(*SPEAKER_PITCH_RANGES[i % 2]) for i, v in enumerate(TRAIN_VOICES + TEST_VOICES)}
    voices = TEST_VOICES if split == "test" else TRAIN_VOICES
    return [Speaker(v, pitches[v]) for v in voices]


def is_high_pitch(speaker: Speaker) -> bool:
    return speaker.pitch >= SPEAKER_PITCH_RANGES[1][0]


# ---------------------------------------------------------------- prompts and target formats
PROMPTS: Dict[str, List[str]] = {
    "asr": ["Transcribe the audio clip into text.", "Write down what is said in the audio.",
            "What does the speaker say? Give the exact words.", "Please transcribe this recording."],
    "st": ["Translate the audio clip into German.", "Listen to the English speech and write its German translation.",
           "What is the German translation of the audio?", "Translate what the speaker says into German."],
    "sv": ["Is there only one speaker in the audio clip?", "Does a single person speak in this recording? Answer yes or no.",
           "Are both sentences spoken by the same speaker?", "Is the whole clip spoken by one speaker?"],
    "rate": ["How fast does the speaker talk? Answer slow, normal or fast.",
             "Is the speaking rate slow, normal or fast?", "Classify the speed of the speech as slow, normal or fast."],
    "sqa": ["{question} {options}", "Listen to the audio and answer the question. {question} {options}",
            "Answer the question about the audio clip. {question} {options}"],
    "ii": ["First transcribe the audio clip, then answer the question. {question} {options}",
           "Do two things: write down what is said, and answer this question: {question} {options}",
           "Transcribe the speech. Also answer this question: {question} {options}"],
    "cot": ["First transcribe the audio clip, then translate the transcript into German.",
            "Write down what is said, then translate your transcript into German.",
            "Transcribe the speech and then give the German translation of the transcript."],
}
TARGET_FORMATS = {"ii": "Transcript: {transcript} Answer: {answer}",
                  "cot": "Transcript: {transcript} Translation: {translation}"}
SQA_QUESTIONS = {  # question kind -> (question, vocabulary of options)
    "animal": ("Which animal is mentioned?", list(ANIMALS)),
    "color": ("What color is the object?", list(COLORS)),
    "object": ("What object is mentioned?", list(THINGS)),
    "action": ("What does the animal do with the object?", list(VERBS)),
}
N_OPTIONS = 4
STAGE1_TASKS = ("asr", "st", "sv", "rate", "sqa")
STAGE2_TASKS = ("ii", "cot")


# ---------------------------------------------------------------- example planning
@dataclass
class Utterance:
    text: str
    voice: str
    rate: int
    pitch: int


@dataclass
class Example:
    id: str
    task: str
    split: str
    prompt: str
    target: str
    utterances: List[Utterance]
    combinations: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def audio(self) -> str:
        """Path relative to the audio root."""
        return f"{self.task}/{self.split}/{self.id}.wav"


def _balanced(rng: random.Random, choices: Sequence, n: int) -> list:
    values = [choices[i % len(choices)] for i in range(n)]
    rng.shuffle(values)
    return values


def _sqa_question(rng: random.Random, sentence: Sentence, kind: str, place: int) -> Tuple[str, str, str]:
    """(question, options text, answer) with the correct option at ``place`` among the options."""
    question, vocabulary = SQA_QUESTIONS[kind]
    correct = {"animal": sentence.animal, "color": sentence.color, "object": sentence.thing,
               "action": sentence.verb}[kind]
    options = rng.sample([w for w in vocabulary if w != correct], N_OPTIONS - 1)
    options.insert(place, correct)
    return question, f"Options: {', '.join(options)}.", correct


def plan_task(task: str, split: str, n: int, seed: int) -> List[Example]:
    """The task's ``n`` examples of one split, fully determined by (task, split, n, seed)."""
    rng = random.Random(f"{seed}/{task}/{split}")
    pool = speakers(seed, split)
    held_out = split == "test"
    if task not in PROMPTS:
        raise ValueError(f"unknown task {task!r}; tasks are {', '.join(STAGE1_TASKS + STAGE2_TASKS)}")
    # Balanced classes: sv answers, rate classes, sqa/ii question kinds; and sqa/ii answer places.
    classes = {**SPEECH_ONLY_ANSWERS, "sqa": list(SQA_QUESTIONS), "ii": list(SQA_QUESTIONS)}
    labels = _balanced(rng, classes.get(task, [None]), n)
    places = _balanced(rng, list(range(N_OPTIONS)), n)
    examples = []
    for i in range(n):
        sentence = sample_sentence(rng, held_out)
        speaker = rng.choice(pool)
        rate = rng.randint(*NORMAL_RATE_RANGE)
        prompt = rng.choice(PROMPTS[task])
        utterances = [Utterance(sentence.english(), speaker.voice, rate, speaker.pitch)]
        combinations = [sentence.combination]
        if task == "asr":
            target = sentence.english()
        elif task == "st":
            target = sentence.german()
        elif task == "sv":
            other_pitch = [s for s in pool if is_high_pitch(s) != is_high_pitch(speaker)]
            second_speaker = speaker if labels[i] == "Yes" else rng.choice(other_pitch)
            second = sample_sentence(rng, held_out)
            utterances.append(Utterance(second.english(), second_speaker.voice,
                                        rng.randint(*NORMAL_RATE_RANGE), second_speaker.pitch))
            combinations.append(second.combination)
            target = labels[i]
        elif task == "rate":
            utterances[0].rate = rng.randint(*RATE_CLASSES[labels[i]])
            target = labels[i]
        elif task in ("sqa", "ii"):
            question, options, answer = _sqa_question(rng, sentence, labels[i], places[i])
            prompt = prompt.format(question=question, options=options)
            target = answer if task == "sqa" else TARGET_FORMATS["ii"].format(
                transcript=sentence.english(), answer=answer)
        else:  # cot
            target = TARGET_FORMATS["cot"].format(transcript=sentence.english(), translation=sentence.german())
        examples.append(Example(f"{task}-{split}-{i:05d}", task, split, prompt, target, utterances, combinations))
    return examples


# ---------------------------------------------------------------- sizes
@dataclass(frozen=True)
class CorpusSize:
    train: Dict[str, int]
    """Training examples per task."""
    valid: int
    """Validation examples per task."""
    test: int
    """Test examples per task."""


SIZES_BY_NAME = {
    "tiny": CorpusSize(train={t: 4 for t in STAGE1_TASKS + STAGE2_TASKS}, valid=2, test=4),
    "demo": CorpusSize(train={"asr": 600, "st": 600, "sv": 400, "rate": 300, "sqa": 400, "ii": 400, "cot": 400},
                       valid=40, test=100),
}


# ---------------------------------------------------------------- synthesis
_synthesizer = None


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # one process per core


def _render(job: Tuple[str, List[Utterance]]) -> int:
    """Synthesises one example's utterances into ``path`` (pauses between them); returns its samples."""
    global _synthesizer
    from espeak import EspeakSynthesizer

    if _synthesizer is None:
        _synthesizer = EspeakSynthesizer()
    path, utterances = job
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    pieces = []
    for k, u in enumerate(utterances):
        pieces += ([pause] if k else []) + [_synthesizer.synthesize(u.text, u.voice, u.rate, u.pitch)]
    wave = np.concatenate(pieces)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    soundfile.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
    return len(wave)


def _synthesize_all(examples: List[Example], audio_root: str, workers: int, quiet: bool) -> Dict[str, int]:
    from tqdm import tqdm

    jobs = [(os.path.join(audio_root, e.audio), e.utterances) for e in examples]
    bar = dict(total=len(jobs), desc="synthesising", unit="clip", disable=quiet)
    if workers <= 1:
        frames = [_render(job) for job in tqdm(jobs, **bar)]
    else:
        # spawn: forking a process that has used torch's thread pool can hang the children
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
            frames = list(tqdm(pool.imap(_render, jobs, chunksize=16), **bar))
    return {e.id: n for e, n in zip(examples, frames)}


# ---------------------------------------------------------------- building
@dataclass
class CorpusSummary:
    out: str
    audio_root: str
    manifests: Dict[str, str]
    """Manifest name (e.g. ``manifests/train_asr``) -> path."""
    n_examples: int
    seconds: float
    """Wall time of the build."""


def _rows(examples: Iterable[Example], frames: Dict[str, int]) -> List[ManifestRow]:
    return [ManifestRow(e.id, [e.audio], frames[e.id], e.prompt, e.target, True, task=e.task) for e in examples]


def text_corpus(examples: Iterable[Example]) -> List[str]:
    """Every distinct prompt, target and spoken sentence, in first-seen order."""
    seen: Dict[str, None] = {}
    for e in examples:
        for text in [e.prompt, e.target] + [u.text for u in e.utterances]:
            seen.setdefault(text, None)
    return list(seen)


def build_corpus(out: str, seed: int = 0, size: str = "tiny", workers: int = 1, quiet: bool = True) -> CorpusSummary:
    """Plans, synthesises and writes the whole corpus under ``out`` (see the module docstring)."""
    if size not in SIZES_BY_NAME:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES_BY_NAME)}")
    start = time.time()
    sizes = SIZES_BY_NAME[size]
    plan: Dict[Tuple[str, str], List[Example]] = {}
    for task in STAGE1_TASKS + STAGE2_TASKS:
        for split, n in (("train", sizes.train[task]), ("valid", sizes.valid), ("test", sizes.test)):
            plan[task, split] = plan_task(task, split, n, seed)
    every = [e for examples in plan.values() for e in examples]
    audio_root = os.path.join(out, "audio")
    frames = _synthesize_all(every, audio_root, workers, quiet)

    manifests = {f"manifests/{split}_{task}": examples for (task, split), examples in plan.items()}
    paths = {}
    for name, examples in manifests.items():
        paths[name] = os.path.join(out, name + ".tsv")
        write_manifest(paths[name], _rows(examples, frames))
    with open(os.path.join(out, "text_corpus.txt"), "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in text_corpus(every))
    with open(os.path.join(out, "meta.jsonl"), "w", encoding="utf-8") as f:
        for e in every:
            record = asdict(e)
            record["n_frames"] = frames[e.id]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    return CorpusSummary(out, audio_root, paths, len(every), time.time() - start)


def main(argv: Optional[List[str]] = None) -> CorpusSummary:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=sorted(SIZES_BY_NAME), default="demo",
                        help="tiny: a few examples per task (tests); demo: the CPU demo corpus")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="synthesis processes")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    summary = build_corpus(args.out, args.seed, args.size, args.workers, args.quiet)
    if not args.quiet:
        print(f"{summary.n_examples} examples in {summary.seconds:.1f} s; "
              f"train with --audio-root {summary.audio_root}", file=sys.stderr)
    return summary


if __name__ == "__main__":
    main()
