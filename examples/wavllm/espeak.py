"""Offline speech synthesis with eSpeak NG, for demo corpora and tests.

The library and its voice data come from the PyPI package ``espeakng-loader``
and are driven through ctypes; nothing is downloaded. eSpeak renders 22050 Hz
int16; we return mono float32 at 16 kHz, resampled with the band-limited
polyphase resampler of :mod:`wavllm_fairseq.data.audio`.

Reproducibility: eSpeak keeps synthesis state in static variables (pitch-flutter
phase, noise generators, libc ``rand``) that survive ``espeak_Terminate``, so
the same text synthesised twice in one process gives different samples and even
different lengths. Each call therefore loads a fresh copy of the library
(``dlopen``), seeds its generators, synthesises and unloads it again (< 1 ms of
overhead). The same (text, voice, rate, pitch) then gives identical samples in
any process and in any order. The library is process-global, so calls are
serialised by a lock; use processes, not threads, for parallel synthesis.

Measured on the 2-core development machine, one process: real-time factor 0.002-0.004
(a 2 s sentence takes 4-7 ms, resampling included). Each call leaks about 3.5 KB inside
eSpeak (voice loading memory that ``espeak_Terminate`` does not free): ~15 MB for the
4,300 clips of the demo corpus.

>>> wave = EspeakSynthesizer().synthesize("hello world", voice="en-us+f2")
>>> wave.dtype, wave.ndim
(dtype('float32'), 1)
"""
from __future__ import annotations

import _ctypes
import ctypes
import os
import threading
from typing import List

import espeakng_loader
import numpy as np
import torch

from wavllm_fairseq.data.audio import SAMPLE_RATE, resample

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_RAND_SEED = 1  # any fixed value: only its constancy matters

RATE_RANGE = (80, 450)
"""Words per minute eSpeak accepts without clamping."""
PITCH_RANGE = (0, 100)
"""eSpeak's pitch scale (50 is the voice's normal pitch)."""

_LOCK = threading.Lock()
_CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """The eSpeak library failed (initialisation or synthesis)."""


class UnknownVoiceError(ValueError):
    """A voice name eSpeak does not have; the message names it and lists the choices."""


class _VoiceStruct(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p), ("languages", ctypes.c_void_p), ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte), ("age", ctypes.c_ubyte), ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte), ("score", ctypes.c_int), ("spare", ctypes.c_void_p),
    ]


class _FreshLibrary:
    """Context manager: a newly loaded, initialised and seeded libespeak-ng, unloaded on exit."""

    def __init__(self, collected: List[np.ndarray]):
        self.collected = collected

    def __enter__(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceStruct))
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib = lib
        data_path = espeakng_loader.get_data_path()
        self.sample_rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if self.sample_rate <= 0:
            self._unload()
            raise EspeakError(f"espeak_Initialize failed with voice data at {data_path}")
        # The callback object must outlive the synthesis, so it is kept on self.
        self.callback = _CALLBACK_TYPE(self._collect)
        lib.espeak_SetSynthCallback(self.callback)
        lib.espeak_ng_SetRandSeed(_RAND_SEED)
        ctypes.CDLL(None).srand(_RAND_SEED)  # eSpeak's breath noise also draws from libc rand()
        return lib

    def _collect(self, wav, n_samples, events) -> int:
        if wav and n_samples > 0:
            self.collected.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0  # 0 = continue

    def _unload(self) -> None:
        _ctypes.dlclose(self.lib._handle)

    def __exit__(self, *exc) -> None:
        self.lib.espeak_Terminate()
        self._unload()


def list_variants() -> List[str]:
    """Voice variants usable after ``+`` (``m1``..``m8``, ``f1``..``f5``, named ones like ``klatt``)."""
    folder = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
    return sorted(os.listdir(folder))


def list_languages() -> List[str]:
    """Language codes usable as the voice name before ``+`` (e.g. ``en-us``, ``en-gb-scotland``)."""
    with _LOCK, _FreshLibrary([]) as lib:
        voices = lib.espeak_ListVoices(None)
        codes, i = [], 0
        while voices[i]:
            # `languages` holds (priority byte, NUL-terminated code) pairs; the first code is the main one.
            codes.append(ctypes.string_at(voices[i].contents.languages + 1).decode())
            i += 1
    return sorted(set(codes))


class EspeakSynthesizer:
    """Text to 16 kHz float32 speech with a named eSpeak voice, speaking rate and pitch."""

    sample_rate = SAMPLE_RATE

    def __init__(self):
        self._variants = set(list_variants())

    def synthesize(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50) -> np.ndarray:
        """Speech for ``text``.

        voice: ``language[+variant]``, e.g. ``en-us``, ``en+m3``, ``en-us+f2``.
        rate: words per minute, within RATE_RANGE. pitch: 0..100, 50 = the voice's normal pitch.
        """
        if not text.strip():
            raise ValueError("cannot synthesise empty text")
        if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
            raise ValueError(f"rate must be {RATE_RANGE[0]}..{RATE_RANGE[1]} words per minute, got {rate}")
        if not PITCH_RANGE[0] <= pitch <= PITCH_RANGE[1]:
            raise ValueError(f"pitch must be {PITCH_RANGE[0]}..{PITCH_RANGE[1]}, got {pitch}")
        language, _, variant = voice.partition("+")
        # eSpeak silently ignores an unknown variant, so check it here.
        if variant and variant not in self._variants:
            raise UnknownVoiceError(
                f"unknown eSpeak voice {voice!r}: no variant {variant!r} (variants: {', '.join(sorted(self._variants))})"
            )
        pieces: List[np.ndarray] = []
        with _LOCK:
            fresh = _FreshLibrary(pieces)
            with fresh as lib:
                if lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                    raise UnknownVoiceError(
                        f"unknown eSpeak voice {voice!r}: no language {language!r} (see list_languages())"
                    )
                lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
                lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
                encoded = text.encode("utf-8") + b"\0"
                status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
                if status != _EE_OK:
                    raise EspeakError(f"espeak_Synth failed with status {status} for text {text!r}")
                native_rate = fresh.sample_rate
        if not pieces:
            raise EspeakError(f"eSpeak produced no audio for text {text!r} with voice {voice!r}")
        wave = torch.from_numpy(np.concatenate(pieces).astype(np.float32) / 32768.0)
        return resample(wave, native_rate, SAMPLE_RATE).numpy()
