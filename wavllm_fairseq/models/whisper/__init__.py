"""Whisper audio encoder: bit-compatible front end, masked encoder, checkpoint loaders."""
from .checkpoint import detect_format, load_whisper_encoder
from .config import WHISPER_PRESETS, WhisperEncoderConfig
from .frontend import log_mel_spectrogram
from .model import WhisperEncoder

__all__ = ["WhisperEncoderConfig", "WHISPER_PRESETS", "WhisperEncoder", "log_mel_spectrogram",
           "load_whisper_encoder", "detect_format"]
