"""Shared inputs for the Whisper tests: espeak-ng speech and a random tiny openai-whisper checkpoint."""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import pytest
import torch

UTTERANCES = ["the quick brown fox jumps over the lazy dog", "hello world", "a small red bird sings in the tree"]

TINY_DIMS = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                 n_vocab=100, n_text_ctx=16, n_text_state=64, n_text_head=2, n_text_layer=1)


@pytest.fixture(scope="session")
def utterances() -> List[str]:
    """The texts spoken in ``speech``."""
    return list(UTTERANCES)


@pytest.fixture(scope="session")
def speech() -> List[np.ndarray]:
    """Three English utterances of different lengths, float32 16 kHz."""
    from espeak import EspeakSynthesizer

    synthesizer = EspeakSynthesizer()
    return [synthesizer.synthesize(text, voice="en-us") for text in UTTERANCES]


def _batch(waves: List[np.ndarray], pad_value: float = 0.0):
    lengths = torch.tensor([len(w) for w in waves])
    out = torch.full((len(waves), int(lengths.max())), pad_value)
    for i, w in enumerate(waves):
        out[i, : len(w)] = torch.from_numpy(np.asarray(w, dtype=np.float32))
    return out, lengths


def _perturbed_whisper(dims: Dict[str, int], seed: int = 0):
    import whisper

    torch.manual_seed(seed)
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**dims))
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.nan_to_num(param) + 0.05 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="session")
def batch():
    """batch(waves, pad_value=0.0) -> right-padded (B, T) tensor filled with pad_value, and lengths."""
    return _batch


@pytest.fixture(scope="session")
def perturbed_whisper():
    """perturbed_whisper(dims, seed=0) -> a random openai-whisper model whose every weight
    (norm scales and biases too) differs from its default."""
    return _perturbed_whisper


@pytest.fixture(scope="session")
def tiny_dims() -> Dict[str, int]:
    return dict(TINY_DIMS)


@pytest.fixture(scope="session")
def openai_checkpoint(tmp_path_factory):
    """(path of a saved random tiny openai-whisper .pt, the model itself)."""
    model = _perturbed_whisper(TINY_DIMS)
    path = tmp_path_factory.mktemp("openai") / "tiny.pt"
    torch.save({"dims": dict(TINY_DIMS), "model_state_dict": model.state_dict()}, path)
    return str(path), model
