"""Shared fixtures: a tiny corpus of real synthesized speech and a tokenizer trained on it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import soundfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SENTENCES = [
    "the red cat sees a small dog", "a green bird eats the big fish", "the small dog runs home",
    "a big cat jumps over the fence", "the fish swims in the blue lake", "my friend reads a good book",
    "the old man walks to the park", "a young girl sings a song", "the sun is bright today",
    "we play in the green garden", "the bird flies over the house", "a dog sleeps under the tree",
]
TEST_SENTENCES = ["the big dog sees a red bird", "a small fish swims home", "the girl reads in the park"]
VOICES = ["en-us", "en+m3", "en-us+f2"]
PROMPT = "Transcribe the audio clip into text."


def _run_fairseq(tool: str, args, cwd, check=True):
    """Runs a fairseq console entry point in this interpreter; returns the completed process."""
    cmd = [sys.executable, "-m", f"fairseq_cli.{tool}", *map(str, args)]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory):
    """ASR manifests of espeak-ng speech (train/valid/test) plus text-only rows, and a SentencePiece model."""
    sentencepiece = pytest.importorskip("sentencepiece")
    espeak = pytest.importorskip("espeak")
    from wavllm_fairseq.data.manifest import ManifestRow, write_manifest

    root = tmp_path_factory.mktemp("corpus")
    synth = espeak.EspeakSynthesizer()
    (root / "audio").mkdir()

    def rows(split, sentences, voices):
        out = []
        for i, text in enumerate(sentences):
            voice = voices[i % len(voices)]
            wave = synth.synthesize(text, voice=voice, rate=160 + 10 * (i % 3))
            rel = f"audio/{split}_{i}.wav"
            soundfile.write(root / rel, wave, 16000)
            out.append(ManifestRow(f"{split}-{i}", [rel], len(wave), PROMPT, text, True, task="asr"))
        return out

    train = rows("train", SENTENCES, VOICES)
    train += [ManifestRow(f"text-{i}", [], 0, f"Repeat after me: {s}", s, False, task="text")
              for i, s in enumerate(SENTENCES[:4])]
    write_manifest(str(root / "train.tsv"), train)
    write_manifest(str(root / "valid.tsv"), rows("valid", SENTENCES[:3], VOICES[1:]))
    write_manifest(str(root / "test.tsv"), rows("test", TEST_SENTENCES, ["en-us+f2"]))

    text = root / "spm_text.txt"
    text.write_text("\n".join(SENTENCES + TEST_SENTENCES + [PROMPT, "Repeat after me:",
                                                          "[INST] <<SYS>> <</SYS>> <SPEECH> </SPEECH> [/INST]"]))
    sentencepiece.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(root / "spm"), vocab_size=120, model_type="bpe",
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, byte_fallback=False,
        minloglevel=2,
    )
    return root


@pytest.fixture(scope="session")
def run_fairseq():
    """Runs a fairseq console entry point (train, generate, ...) in a subprocess of this interpreter."""
    return _run_fairseq
