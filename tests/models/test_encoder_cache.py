"""The on-disk cache of Whisper's output (--whisper-cache-dir): same result, hits, and every kind of miss."""
import os
import shutil
from types import SimpleNamespace

import pytest
import torch

from wavllm_fairseq.models.wavllm import ARCHITECTURES, WavLLMConfig, WavLLMModel
from wavllm_fairseq.tasks.wavllm import WavLLMTask, WavLLMTaskConfig

SPEECH_ROWS = [0, 1, 2]


@pytest.fixture
def corpus(speech_corpus, tmp_path):
    """A private copy: the tests rewrite audio files."""
    return shutil.copytree(speech_corpus, tmp_path / "corpus")


@pytest.fixture
def task(corpus):
    cfg = WavLLMTaskConfig(data=str(corpus), tokenizer_path=str(corpus / "spm.model"), seed=1)
    task = WavLLMTask.setup_task(cfg)
    task.load_dataset("train")
    return task


def batch(task):
    """A fresh collate: the audio keys are read from the files' current state."""
    dataset = task.datasets["train"]
    return dataset.collater([dataset[i] for i in SPEECH_ROWS])


def build(task, cache_dir, seed=0):
    torch.manual_seed(seed)
    cfg = WavLLMConfig(**ARCHITECTURES["wavllm_tiny"], whisper_cache_dir=str(cache_dir) if cache_dir else None)
    return WavLLMModel.build_model(cfg, SimpleNamespace(target_dictionary=task.target_dictionary)).eval()


def count_whisper_rows(model):
    """Wraps the model's Whisper so each call records how many clips it encoded."""
    calls = []
    whisper = model.encoder.whisper
    original = whisper.encode_waves

    def counted(waves, lengths, **kwargs):
        calls.append(len(lengths))
        return original(waves, lengths, **kwargs)

    whisper.encode_waves = counted
    return calls


def logits(model, sample):
    with torch.no_grad():
        return model(**sample["net_input"])[0]


def cached_files(folder):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(folder) for f in files if f.endswith(".pt"))


def test_cached_forward_equals_uncached_and_second_call_skips_whisper(task, tmp_path):
    sample = batch(task)
    plain = build(task, None)
    model = build(task, tmp_path / "cache")
    model.load_state_dict(plain.state_dict())
    calls = count_whisper_rows(model)

    expected = logits(plain, sample)
    first = logits(model, sample)
    assert calls == [len(SPEECH_ROWS)]
    assert len(cached_files(tmp_path / "cache")) == len(SPEECH_ROWS)
    second = logits(model, sample)
    assert calls == [len(SPEECH_ROWS)], "the second call read the cache"
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


@pytest.mark.parametrize("change", ["touch", "rewrite"])
def test_changed_audio_file_misses(task, corpus, tmp_path, change):
    model = build(task, tmp_path / "cache")
    calls = count_whisper_rows(model)
    logits(model, batch(task))
    audio = corpus / "audio" / "train_1.wav"
    if change == "touch":
        st = os.stat(audio)
        os.utime(audio, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    else:
        audio.write_bytes(audio.read_bytes() + b"\0\0")  # a trailing chunk byte pair: new size
    logits(model, batch(task))
    assert calls == [len(SPEECH_ROWS), 1], "only the changed clip is encoded again"
    assert len(cached_files(tmp_path / "cache")) == len(SPEECH_ROWS) + 1


def test_changed_whisper_weights_miss(task, tmp_path):
    sample = batch(task)
    model = build(task, tmp_path / "cache")
    logits(model, sample)
    # Another checkpoint with different Whisper weights (everything else equal) must not read them.
    state = model.state_dict()
    state["encoder.whisper.ln_post.weight"] = state["encoder.whisper.ln_post.weight"] + 0.5
    other = build(task, tmp_path / "cache", seed=1)
    other.load_state_dict(state)
    calls = count_whisper_rows(other)
    reference = build(task, None)
    reference.load_state_dict(state)
    torch.testing.assert_close(logits(other, sample), logits(reference, sample), rtol=1e-5, atol=1e-5)
    assert calls == [len(SPEECH_ROWS)]
    assert len(cached_files(tmp_path / "cache")) == 2 * len(SPEECH_ROWS)
