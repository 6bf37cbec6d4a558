"""The inference core behind the Python API, ``wavllm_fairseq.chat`` and ``wavllm_fairseq.serve``.

It runs what ``fairseq-generate`` runs: the checkpoint is loaded by fairseq's
``checkpoint_utils``, the model is prepared by ``prepare_for_inference_`` and decoded by the
task's ``build_generator`` / ``inference_step`` (fairseq's SequenceGenerator), on batches built
as the ``wavllm`` task's collater builds them. The same checkpoint, prompt and decoding options
therefore give the same tokens as ``fairseq-generate``.
"""
from __future__ import annotations

import io
import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import soundfile
import torch

from .data.audio import SAMPLE_RATE, AudioError, load_audio, mono_16k
from .data.dataset import SAMPLES_PER_LLM_POSITION, prompt_input
from .models.common.checkpoint_errors import CheckpointError
from .text.templates import EncodedPrompt, Turn

Audio = Union[None, str, os.PathLike, np.ndarray, Tuple[np.ndarray, int]]
"""A clip: a file path, a waveform at 16 kHz (1-D, or frames x channels), a ``(waveform,
sample_rate)`` pair, or None for a text-only prompt."""

TokensCallback = Callable[[int, List[int]], None]
"""Called during decoding at beam 1 with a query's index and every token generated for it so far."""

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class Decoding:
    """Decoding options; each is the ``fairseq-generate`` flag named beside it."""

    beam: int = 1
    """``--beam``: 1 decodes greedily (or samples one answer)."""
    max_new_tokens: int = 200
    """``--max-len-b`` with ``--max-len-a 0``: the most tokens an answer has."""
    sampling: bool = False
    """``--sampling``: draw each token instead of searching."""
    temperature: float = 1.0
    """``--temperature``."""
    top_p: Optional[float] = None
    """``--sampling-topp``: sample from the smallest token set holding this probability mass."""

    def __post_init__(self):
        if self.beam < 1:
            raise ValueError(f"beam must be at least 1, got {self.beam}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def generation_config(self):
        from fairseq.dataclass.configs import GenerationConfig

        return GenerationConfig(
            beam=self.beam, max_len_a=0, max_len_b=self.max_new_tokens, sampling=self.sampling,
            temperature=self.temperature, sampling_topp=-1.0 if self.top_p is None else self.top_p,
        )


@dataclass
class Query:
    """One example to answer, tokenized as the ``wavllm`` task tokenizes a manifest row."""

    prompt: EncodedPrompt
    instruction: List[int]
    """The bare instruction, for the prompt-aware LoRA weight adapter."""
    wave: Optional[torch.Tensor]
    """16 kHz mono float32 samples, or None without speech."""

    @property
    def prefix(self) -> List[int]:
        return self.prompt.prefix

    @property
    def suffix(self) -> List[int]:
        return self.prompt.suffix

    @property
    def speech_positions(self) -> int:
        """LLM positions the speech takes (12.5 per second)."""
        return 0 if self.wave is None else math.ceil(self.wave.numel() / SAMPLES_PER_LLM_POSITION)

    @property
    def prompt_tokens(self) -> int:
        """Prompt length in LLM positions: template and text tokens plus speech frames."""
        return len(self.prompt.prefix) + len(self.prompt.suffix) + self.speech_positions


@dataclass
class Answer:
    text: str
    tokens: List[int]
    """Generated ids, the end of turn excluded."""
    finished: bool
    """Whether the model ended its turn (False: cut at ``max_new_tokens``)."""
    score: float
    """fairseq's hypothesis score (mean log-probability per token, base e)."""


def waveform(audio: Audio, name: str) -> Optional[torch.Tensor]:
    """16 kHz mono float32 samples of ``audio`` (see :data:`Audio`); ``name`` is used in errors."""
    if audio is None:
        return None
    if isinstance(audio, (str, os.PathLike)):
        return load_audio([os.fspath(audio)])
    sample_rate = SAMPLE_RATE
    if isinstance(audio, tuple):
        if len(audio) != 2:
            raise AudioError(f"{name}: a waveform tuple is (samples, sample_rate)")
        audio, sample_rate = audio
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    if not isinstance(audio, np.ndarray):
        raise AudioError(f"{name}: expected a path, a numpy waveform or (waveform, sample_rate), "
                         f"got {type(audio).__name__}")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise AudioError(f"{name}: sample rate must be a positive integer, got {sample_rate!r}")
    if audio.ndim not in (1, 2):
        raise AudioError(f"{name}: a waveform has 1 dimension (samples) or 2 (samples x channels), got {audio.ndim}")
    if np.issubdtype(audio.dtype, np.integer):
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max)
    elif not np.issubdtype(audio.dtype, np.floating):
        raise AudioError(f"{name}: waveform samples must be numbers, got dtype {audio.dtype}")
    if audio.shape[0] == 0:
        raise AudioError(f"{name}: empty waveform")
    if not np.isfinite(audio).all():
        raise AudioError(f"{name}: waveform holds NaN or infinite samples")
    frames = audio.reshape(-1, 1) if audio.ndim == 1 else audio
    return mono_16k(frames.astype(np.float32, copy=False), int(sample_rate))


def waveform_from_bytes(data: bytes, name: str) -> torch.Tensor:
    """16 kHz mono samples of an encoded audio file held in memory (any format libsndfile reads)."""
    try:
        frames, sample_rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{name}: not audio that can be decoded ({e})") from None
    if frames.shape[0] == 0:
        raise AudioError(f"{name}: audio holds no samples")
    if not np.isfinite(frames).all():
        raise AudioError(f"{name}: audio holds NaN or infinite samples")
    return mono_16k(frames, sample_rate)


class WavLLM:
    """A trained WavLLM, ready to answer questions about clips."""

    def __init__(self, model, task, device: torch.device, dtype: torch.dtype,
                 batch_size: int = 16):
        self.model = model
        self.task = task
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        """Most queries decoded together."""
        self.dictionary = task.target_dictionary
        self._lock = threading.Lock()  # the streaming hooks and the model's state serve one decode at a time

    @classmethod
    def from_checkpoint(cls, path: str, tokenizer: Optional[str] = None, device: Union[str, torch.device, None] = None,
                        dtype: Union[str, torch.dtype] = torch.float32, batch_size: int = 16,
                        overrides: Optional[Dict] = None) -> "WavLLM":
        """Loads a checkpoint of ours as ``fairseq-generate --path`` does. ``tokenizer``: the
        tokenizer file, by default the one recorded in the checkpoint (``--tokenizer-path``);
        ``device``: ``cuda`` when available unless given; ``dtype``: float32 or bfloat16;
        ``overrides``: config values replacing the checkpoint's (``--model-overrides``), e.g. moved
        weights ``{"whisper_path": ...}``."""
        from fairseq import checkpoint_utils
        from fairseq.dataclass.configs import FairseqConfig
        from omegaconf import OmegaConf

        if not os.path.isfile(path):  # fairseq's loader reports it as a model that does not fit
            raise CheckpointError(path, "checkpoint not found")
        dtype = _DTYPES[dtype] if isinstance(dtype, str) and dtype in _DTYPES else dtype
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(_DTYPES)}")
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        overrides = {**(overrides or {}), **({"tokenizer_path": tokenizer} if tokenizer else {})}
        models, _, task = checkpoint_utils.load_model_ensemble_and_task([path], arg_overrides=overrides)
        model = models[0]
        model.to(device=device, dtype=dtype)
        cfg = OmegaConf.structured(FairseqConfig)
        model.prepare_for_inference_(cfg)
        model.eval()
        return cls(model, task, device, dtype, batch_size)

    # --- prompts -----------------------------------------------------------------------------

    def query(self, audio: Audio, prompt: str, name: str = "audio") -> Query:
        """The query for one clip (or None) and one instruction."""
        wave = waveform(audio, name)
        encoded = self.task.template.encode_prompt(self.task.tokenizer, prompt, wave is not None)
        return Query(encoded, self._instruction(prompt), wave)

    def conversation_query(self, turns: Sequence[Turn], system: Optional[str] = None,
                           wave: Optional[torch.Tensor] = None) -> Query:
        """The query for a conversation ending with a user turn, rendered with the model's chat
        template; ``wave`` (16 kHz) goes to the turn marked ``with_speech``."""
        encoded = self.task.template.encode_conversation(self.task.tokenizer, turns, system)
        return Query(encoded, self._instruction(turns[-1].text), wave)

    def _instruction(self, prompt: str) -> List[int]:
        return self.task.template.encode_instruction(self.task.tokenizer, prompt)

    # --- decoding ----------------------------------------------------------------------------

    def generate(self, audios: Sequence[Audio], prompts: Sequence[str], beam: int = 1,
                 max_new_tokens: int = Decoding.max_new_tokens, sampling: bool = False,
                 temperature: float = Decoding.temperature, top_p: Optional[float] = None,
                 seed: Optional[int] = None) -> List[str]:
        """One answer per (audio, prompt) pair, in order. ``audios``: see :data:`Audio`."""
        if isinstance(prompts, str) or len(audios) != len(prompts):
            raise ValueError("generate takes a list of audios and a list of prompts of the same length")
        queries = [self.query(a, p, name=f"audio #{i}") for i, (a, p) in enumerate(zip(audios, prompts))]
        decoding = Decoding(beam, max_new_tokens, sampling, temperature, top_p)
        if seed is not None:
            torch.manual_seed(seed)
        return [a.text for a in self.answer(queries, decoding)]

    def answer(self, queries: Sequence[Query], decoding: Decoding = Decoding(),
               on_tokens: Optional[TokensCallback] = None) -> List[Answer]:
        """Answers in the order of ``queries``, decoded in batches of similar length."""
        order = sorted(range(len(queries)), key=lambda i: _cost(queries[i]))
        answers: List[Optional[Answer]] = [None] * len(queries)
        with self._lock:
            generator = self.task.build_generator([self.model], decoding.generation_config())
            for start in range(0, len(order), self.batch_size):
                rows = order[start: start + self.batch_size]
                sample = self._batch([queries[i] for i in rows])
                with _observed_steps(self.model, torch.tensor(rows), on_tokens if decoding.beam == 1 else None):
                    hypotheses = self.task.inference_step(generator, [self.model], sample)
                for i, hypos in zip(rows, hypotheses):
                    answers[i] = self._answer(hypos[0], decoding)
        return answers

    def text(self, tokens: Sequence[int]) -> str:
        """Detokenized text, as ``fairseq-generate`` prints it."""
        return self.dictionary.string(torch.tensor(tokens, dtype=torch.long))

    def _answer(self, hypo: Dict, decoding: Decoding) -> Answer:
        tokens = [t for t in hypo["tokens"].tolist() if t != self.dictionary.eos()]
        finished = len(tokens) < decoding.max_new_tokens
        return Answer(self.text(tokens), tokens, finished, float(hypo["score"]))

    def _batch(self, queries: Sequence[Query]) -> Dict:
        """The ``wavllm`` task's batch for these queries (no target)."""
        net_input = prompt_input(queries, [q.wave for q in queries], self.dictionary.pad())
        net_input["waves"] = net_input["waves"].to(self.dtype)
        net_input = {k: v.to(self.device) for k, v in net_input.items()}
        return {"id": torch.arange(len(queries)), "nsentences": len(queries), "net_input": net_input,
                "target": None, "ntokens": 0}


def _cost(query: Query) -> int:
    """The ``wavllm`` dataset's size of an example without target: batches group similar lengths."""
    audio = 0 if query.wave is None else query.wave.numel()
    return audio + (len(query.prompt.prefix) + len(query.prompt.suffix)) * SAMPLES_PER_LLM_POSITION


@contextmanager
def _observed_steps(model, rows: torch.Tensor, on_tokens: Optional[TokensCallback]):
    """Calls ``on_tokens`` before every decoding step with each live row's tokens so far (beam 1).

    fairseq's generator drops finished rows and reorders the rest through
    ``reorder_encoder_out``, which index-selects every entry of the encoder output: an entry
    holding each row's query index therefore follows its row. The generator calls the
    encoder's and decoder's ``forward`` directly (no module hooks), so they are wrapped here.
    """
    if on_tokens is None:
        yield
        return
    encoder, decoder = model.encoder, model.decoder
    encode, decode = encoder.forward, decoder.forward

    def encode_with_rows(*args, **kwargs):
        out = encode(*args, **kwargs)
        out["query_rows"] = [rows.to(out["prompt_embeds"][0].device)]
        return out

    def decode_observed(prev_output_tokens, encoder_out=None, **kwargs):
        if prev_output_tokens.shape[1] > 1:  # the first column is the placeholder before the answer
            for row, tokens in zip(encoder_out["query_rows"][0].tolist(), prev_output_tokens[:, 1:].tolist()):
                on_tokens(row, tokens)
        return decode(prev_output_tokens, encoder_out=encoder_out, **kwargs)

    encoder.forward, decoder.forward = encode_with_rows, decode_observed
    try:
        yield
    finally:
        del encoder.forward, decoder.forward
