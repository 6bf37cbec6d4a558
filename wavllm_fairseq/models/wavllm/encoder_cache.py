"""On-disk cache of the frozen Whisper encoder's output, one file per audio example.

Whisper is the costliest frozen part (large-v2: 32 layers over 30-s windows) and its output
for a clip never changes while the encoder does not, so epochs after the first can read it
instead. An entry's key hashes the audio files' identity (path, size, modification time), the
encoder's weights and the padding mode: changing any of them misses the old entries. The cache
reads the identity itself from the paths the batch carries, so without a cache nothing is stat'ed.

WavLM's output is not cached: the trainable layer weights need every hidden state (13 per
frame for Base+), which would cost ~1 MB per second of audio on disk.
"""
from __future__ import annotations

import hashlib
import os
from typing import List, Optional

import torch
from torch import Tensor, nn


def audio_identity(paths: List[str]) -> str:
    """What makes a clip's audio the same: its files' absolute paths, sizes and modification times."""
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append(f"{os.path.abspath(p)}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def weights_fingerprint(module: nn.Module) -> str:
    """Hash of every parameter and buffer, so a retrained or reloaded encoder misses old entries."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EncoderOutputCache:
    def __init__(self, folder: str, encoder: nn.Module, variant: str):
        """``variant`` names whatever else changes the output (e.g. the padding mode)."""
        self.folder = folder
        self.encoder = encoder
        self.variant = variant
        self._fingerprint: Optional[str] = None  # computed on first use: the weights may load later

    def entry(self, audio_paths: List[str]) -> str:
        """The file holding the output for the clip made of these audio files (it may not exist yet)."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.encoder)
        identity = audio_identity(audio_paths)
        key = hashlib.sha1(f"{self._fingerprint}/{self.variant}/{identity}".encode()).hexdigest()
        return os.path.join(self.folder, key[:2], key + ".pt")

    def get(self, entry: str) -> Optional[Tensor]:
        """The cached output in ``entry`` (from :meth:`entry`), or None."""
        if not os.path.exists(entry):
            return None
        return torch.load(entry, map_location="cpu", weights_only=True)

    def put(self, entry: str, output: Tensor) -> None:
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        tmp = f"{entry}.{os.getpid()}.tmp"
        torch.save(output.detach().cpu().clone(), tmp)
        os.replace(tmp, entry)  # atomic: readers in other workers never see half a file
