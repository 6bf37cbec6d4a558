"""OpenAI's chat-completions format: requests in, queries and decoding options out, and the
response objects and stream chunks back. Only what a request carries is read: audio comes as
base64 inside it, never from a path or URL."""
from __future__ import annotations

import base64
import binascii
import time
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import torch

from ..data.audio import SAMPLE_RATE, AudioError
from ..inference import Answer, Decoding, Query, WavLLM, waveform_from_bytes
from ..text.templates import Turn

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")
"""``input_audio.format`` values accepted: containers libsndfile decodes."""


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_audio_seconds: float = 60.0
    """Longest audio per request (all its clips together)."""
    max_body_bytes: int = 32 * 1024 * 1024
    """Largest request body."""
    max_new_tokens: int = 512
    """Largest ``max_tokens`` / ``max_completion_tokens``; also the default."""
    max_choices: int = 8
    """Largest ``n``."""


class RequestError(Exception):
    """A request the server refuses, answered as OpenAI's error object."""

    def __init__(self, message: str, param: Optional[str] = None, status: int = 400,
                 kind: str = "invalid_request_error", code: Optional[str] = None):
        super().__init__(message)
        self.message, self.param, self.status, self.kind, self.code = message, param, status, kind, code

    def body(self) -> Dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str, param: Optional[str] = None, code: Optional[str] = None) -> Dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass
class ChatRequest:
    query: Query
    decoding: Decoding
    n: int
    stream: bool
    include_usage: bool
    """``stream_options.include_usage``: a last chunk carries the usage counts."""


def parse_chat_request(body: Any, model: WavLLM, limits: Limits) -> ChatRequest:
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", "messages")
    system_parts: List[str] = []
    turns: List[Turn] = []
    wave = None
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise RequestError(f"{where} must be an object", where)
        role = message.get("role")
        text, waves = _content(message.get("content"), f"{where}.content", limits)
        if role in ("system", "developer"):
            if waves:
                raise RequestError(f"{where}: a {role} message cannot carry audio", where)
            system_parts.append(text)
        elif role in ("user", "assistant"):
            if waves and role == "assistant":
                raise RequestError(f"{where}: an assistant message cannot carry audio", where)
            if waves and wave is not None:
                raise RequestError(f"{where}: audio in more than one message; the model takes one speech span "
                                   "per conversation (put every clip in one message: they are joined in time)", where)
            if waves:
                wave = torch.cat(waves)
            turns.append(Turn(role, text, with_speech=bool(waves)))
        else:
            raise RequestError(f"{where}.role must be system, developer, user or assistant, got {role!r}",
                               f"{where}.role")
    if wave is not None and wave.numel() > limits.max_audio_seconds * SAMPLE_RATE:
        raise RequestError(f"audio of {wave.numel() / SAMPLE_RATE:.1f} s is longer than this server's limit of "
                           f"{limits.max_audio_seconds:g} s", "messages", code="audio_too_long")
    try:
        query = model.conversation_query(turns, "\n".join(system_parts) if system_parts else None, wave)
    except ValueError as e:  # the template's rules for a conversation
        raise RequestError(f"messages: {e}", "messages") from None
    return ChatRequest(query, _decoding(body, limits), _integer(body, "n", 1, 1, limits.max_choices),
                       _boolean(body, "stream"), _include_usage(body))


def _content(content: Any, where: str, limits: Limits):
    """A message's text (its text parts joined by newlines) and its clips."""
    if isinstance(content, str):
        return content, []
    if content is None:
        return "", []
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of content parts", where)
    texts, waves = [], []
    for j, part in enumerate(content):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(f"{at}.text must be a string", f"{at}.text")
            texts.append(part["text"])
        elif kind == "input_audio":
            waves.append(_audio(part.get("input_audio"), f"{at}.input_audio"))
        else:
            raise RequestError(f"{at}: unsupported content part type {kind!r}: text or input_audio", f"{at}.type")
    return "\n".join(texts), waves


def _audio(audio: Any, where: str) -> torch.Tensor:
    if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
        raise RequestError(f"{where} must be an object with base64 'data' and a 'format'", where)
    kind = audio.get("format")
    if kind not in AUDIO_FORMATS:
        raise RequestError(f"{where}.format: unsupported audio format {kind!r}; supported: {', '.join(AUDIO_FORMATS)}",
                           f"{where}.format", code="unsupported_audio_format")
    try:
        data = base64.b64decode(audio["data"], validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where}.data is not valid base64", f"{where}.data", code="invalid_base64") from None
    try:
        return waveform_from_bytes(data, f"{where}.data")
    except AudioError as e:
        raise RequestError(str(e), f"{where}.data", code="invalid_audio") from None


def _decoding(body: Dict[str, Any], limits: Limits) -> Decoding:
    """Greedy unless ``temperature`` > 0, which samples (with ``top_p`` when given)."""
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_new_tokens = limits.max_new_tokens if max_tokens is None else _integer(body, key, None, 1, limits.max_new_tokens)
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    if top_p is not None and top_p <= 0:
        raise RequestError("top_p must be greater than 0", "top_p")
    if not temperature:
        return Decoding(beam=1, max_new_tokens=max_new_tokens)
    return Decoding(beam=1, max_new_tokens=max_new_tokens, sampling=True, temperature=temperature,
                    top_p=None if top_p in (None, 1.0) else top_p)


def _integer(body: Dict[str, Any], key: str, default: Optional[int], low: int, high: int) -> int:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(f"'{key}' must be an integer from {low} to {high}, got {value!r}", key)
    return value


def _number(body: Dict[str, Any], key: str, low: float, high: float) -> Optional[float]:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise RequestError(f"'{key}' must be a number from {low:g} to {high:g}, got {value!r}", key)
    return float(value)


def _boolean(body: Dict[str, Any], key: str) -> bool:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"'{key}' must be true or false, got {value!r}", key)
    return bool(value)


def _include_usage(body: Dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# --- responses --------------------------------------------------------------------------------

def finish_reason(answer: Answer) -> str:
    return "stop" if answer.finished else "length"


def usage(request: ChatRequest, answers: List[Answer]) -> Dict[str, int]:
    prompt = request.query.prompt_tokens
    completion = sum(len(a.tokens) for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class Completion:
    """The id, time and model name that every object of one completion shares."""

    def __init__(self, model_name: str):
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model_name = model_name

    def response(self, request: ChatRequest, answers: List[Answer]) -> Dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model_name,
            "choices": [{"index": i, "message": {"role": "assistant", "content": a.text},
                         "finish_reason": finish_reason(a), "logprobs": None} for i, a in enumerate(answers)],
            "usage": usage(request, answers),
        }

    def chunk(self, choices: List[Dict[str, Any]], usage_counts: Optional[Dict[str, int]] = None) -> Dict[str, Any]:
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model_name, "choices": choices}
        if usage_counts is not None:
            out["usage"] = usage_counts
        return out

    @staticmethod
    def delta(index: int, delta: Dict[str, str], finish: Optional[str] = None) -> Dict[str, Any]:
        return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": None}
