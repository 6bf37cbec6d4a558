"""Chat templates that wrap a speech example for the LLM, one per LLM family, in one registry.

A template renders ``[prefix] [speech frames] [suffix] [target]``; the model places the
speech frames itself, so the template hands back the token ids on either side of them.
``<SPEECH>``, ``</SPEECH>`` and ``[INST]`` are plain text; turn tokens (BOS, header tokens,
``<|im_start|>``) are inserted by id, so user text can never open or close a turn.

Segmentation: each maximal run of text bounded by special tokens, the speech frames and the
start of the target is one ``tokenizer.encode`` call. For SentencePiece this matters (each
call adds a dummy prefix space), and it reproduces the WavLLM release for LLaMA-2, which
encodes ``<s>`` + ``[INST]<<SYS>>…<SPEECH>`` and `` </SPEECH> {prompt} [/INST]`` separately,
then ``{target}`` + ``</s>``. For byte-level vocabularies (Llama-3, ChatML) it equals
tokenizing the rendered chat, which splits at special tokens anyway, except at the speech
and target boundaries.

Text-only examples (``with_speech=False``) drop the speech span ``<SPEECH>`` … ``</SPEECH> ``:
``prefix`` is the text before the user's content, ``suffix`` starts with the prompt, still
encoded in a call of its own so the prompt tokenizes as it does after ``</SPEECH> ``.

Conversations (a system text of the user's, earlier turns) render the same way: every earlier
assistant answer is encoded as a target is, each later user turn opens with
``next_user_turn_start``, and the speech span sits at the start of the content of the user turn
that carries the audio (with no audio, the split sits where the first user content starts). A
single user turn with the default system text gives exactly ``encode_prompt``'s ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..user_error import UserError
from .tokenizer import Tokenizer

SYSTEM = (
    "As a helpful language and speech assistant, you are able to understand the speech content provided by "
    "the user, and assist the user with a variety of tasks using natural language."
)
SPEECH_OPEN = "<SPEECH>"
SPEECH_CLOSE = " </SPEECH> "


class TemplateMismatchError(UserError):
    """A chat template that does not fit the tokenizer (it needs a token the vocabulary lacks), or
    that renders other ids than the template a checkpoint was trained with (another version)."""


@dataclass(frozen=True)
class Special:
    """A token inserted by id: ``name`` is its vocabulary entry, or ``BOS``/``EOS`` for the
    tokenizer's own begin/end of sequence ids (``<s>``/``</s>`` in LLaMA-2)."""

    name: str


BOS = Special("BOS")
EOS = Special("EOS")
_CALL_BOUNDARY = Special("call boundary")
"""Ends a text run: the text after it is encoded by a call of its own (an answer, as a target is)."""
_SPEECH_SPLIT = Special("speech")
"""Where the speech frames go: ``prefix`` ends and ``suffix`` starts here."""
Segment = Union[str, Special]


@dataclass(frozen=True)
class Turn:
    """One message of a conversation."""

    role: str
    """``user`` or ``assistant``."""
    text: str
    with_speech: bool = False
    """Whether the speech frames come before this (user) turn's text."""


@dataclass(frozen=True)
class EncodedPrompt:
    prefix: List[int]
    """Everything before the speech frames (before the prompt when there is no speech)."""
    suffix: List[int]
    """Everything after the speech frames, up to where the target starts."""


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    version: int
    """Bumped whenever the rendered ids change: checkpoints record it (the ``wavllm`` task's state)
    and loading one trained with another version fails, so a model is not silently served with
    prompts it never saw."""
    user_turn_start: Tuple[Segment, ...]
    """From the start of the sequence to the user's content (system turn included)."""
    user_turn_end: Tuple[Segment, ...]
    """From the end of the user's content to where the assistant's answer starts."""
    end_of_turn: Special
    """Closes the answer; generation stops on it."""
    next_user_turn_start: Tuple[Segment, ...]
    """From the end of an answer to the content of the next user turn."""

    def encode_prompt(self, tokenizer: Tokenizer, prompt: str, with_speech: bool) -> EncodedPrompt:
        return self.encode_conversation(tokenizer, [Turn("user", prompt, with_speech)])

    def encode_conversation(self, tokenizer: Tokenizer, turns: Sequence[Turn],
                            system: Optional[str] = None) -> EncodedPrompt:
        """The prompt of a conversation that ends with a user turn; ``system`` replaces the default
        system text. At most one user turn carries speech."""
        if not turns or turns[-1].role != "user":
            raise ValueError("a conversation to answer must end with a user turn")
        if sum(t.with_speech for t in turns) > 1:
            raise ValueError("only one turn of a conversation can carry speech")
        speech_turn = next((i for i, t in enumerate(turns) if t.with_speech), None)
        split_turn = speech_turn if speech_turn is not None else next(i for i, t in enumerate(turns) if t.role == "user")
        segments: List[Segment] = [self._with_system(s, system) for s in self.user_turn_start]
        previous = None
        for i, turn in enumerate(turns):
            if turn.role == "user":
                if previous == "user":
                    raise ValueError("two user turns in a row: join them into one message")
                if previous == "assistant":
                    segments += self.next_user_turn_start
                if i == split_turn:
                    segments += [SPEECH_OPEN, _SPEECH_SPLIT, SPEECH_CLOSE] if turn.with_speech else [_SPEECH_SPLIT]
                segments += [turn.text, *self.user_turn_end]
            elif turn.role == "assistant":
                if previous != "user":
                    raise ValueError("an assistant turn must answer a user turn")
                segments += [_CALL_BOUNDARY, turn.text, self.end_of_turn]
            else:
                raise ValueError(f"unknown role {turn.role!r}: user or assistant")
            previous = turn.role
        split = segments.index(_SPEECH_SPLIT)
        return EncodedPrompt(self._encode(tokenizer, tuple(segments[:split])),
                             self._encode(tokenizer, tuple(segments[split + 1:])))

    @staticmethod
    def _with_system(segment: Segment, system: Optional[str]) -> Segment:
        return segment.replace(SYSTEM, system) if system is not None and isinstance(segment, str) else segment

    def encode_target(self, tokenizer: Tokenizer, text: str) -> List[int]:
        return tokenizer.encode(text) + [self.end_of_turn_id(tokenizer)]

    def end_of_turn_id(self, tokenizer: Tokenizer) -> int:
        return self._special_id(tokenizer, self.end_of_turn)

    @staticmethod
    def encode_instruction(tokenizer: Tokenizer, prompt: str) -> List[int]:
        """The bare instruction for the prompt-aware adapter: quoted, no BOS, no template."""
        return tokenizer.encode('"' + prompt + '"')

    def _encode(self, tokenizer: Tokenizer, segments: Tuple[Segment, ...]) -> List[int]:
        ids: List[int] = []
        text = ""
        for segment in segments:
            if isinstance(segment, str):
                text += segment
                continue
            if text:
                ids += tokenizer.encode(text)
                text = ""
            if segment != _CALL_BOUNDARY:
                ids.append(self._special_id(tokenizer, segment))
        if text:
            ids += tokenizer.encode(text)
        return ids

    def _special_id(self, tokenizer: Tokenizer, special: Special) -> int:
        if special == BOS:
            i, what = tokenizer.bos_id, "a BOS token"
        elif special == EOS:
            i, what = tokenizer.eos_id, "an EOS token"
        else:
            i, what = tokenizer.token_to_id(special.name), f"the token {special.name!r}"
        if i is None:
            raise TemplateMismatchError(
                f"{tokenizer.path}: chat template {self.name!r} needs {what}, which this tokenizer lacks: "
                f"choose the template of the LLM family this tokenizer belongs to ({', '.join(TEMPLATES)})"
            )
        return i


_LLAMA3_HEADER_START = Special("<|start_header_id|>")
_LLAMA3_HEADER_END = Special("<|end_header_id|>")
_LLAMA3_EOT = Special("<|eot_id|>")
_IM_START = Special("<|im_start|>")
_IM_END = Special("<|im_end|>")

TEMPLATES: Dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        # <s>[INST]<<SYS>>\n{SYSTEM}\n<</SYS>>\n\n<SPEECH>{speech} </SPEECH> {prompt} [/INST]{target}</s>
        ChatTemplate(
            name="llama2",
            version=1,
            user_turn_start=(BOS, f"[INST]<<SYS>>\n{SYSTEM}\n<</SYS>>\n\n"),
            user_turn_end=(" [/INST]",),
            end_of_turn=EOS,
            # LLaMA-2 chat: <s>[INST] {user} [/INST] {answer} </s><s>[INST] {user} [/INST]
            next_user_turn_start=(BOS, "[INST] "),
        ),
        ChatTemplate(
            name="llama3",
            version=1,
            user_turn_start=(
                Special("<|begin_of_text|>"),
                _LLAMA3_HEADER_START, "system", _LLAMA3_HEADER_END, f"\n\n{SYSTEM}", _LLAMA3_EOT,
                _LLAMA3_HEADER_START, "user", _LLAMA3_HEADER_END, "\n\n",
            ),
            user_turn_end=(_LLAMA3_EOT, _LLAMA3_HEADER_START, "assistant", _LLAMA3_HEADER_END, "\n\n"),
            end_of_turn=_LLAMA3_EOT,
            next_user_turn_start=(_LLAMA3_HEADER_START, "user", _LLAMA3_HEADER_END, "\n\n"),
        ),
        ChatTemplate(
            name="chatml",
            version=1,
            user_turn_start=(_IM_START, f"system\n{SYSTEM}", _IM_END, "\n", _IM_START, "user\n"),
            user_turn_end=(_IM_END, "\n", _IM_START, "assistant\n"),
            end_of_turn=_IM_END,
            next_user_turn_start=("\n", _IM_START, "user\n"),
        ),
    )
}


def get_template(name: str) -> ChatTemplate:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown chat template {name!r}; known: {', '.join(TEMPLATES)}") from None
