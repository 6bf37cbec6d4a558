"""The one reader of GGUF metadata (the key/value header), for the LLM's configuration and its
tokenizer; the gguf package reads the tensors."""
from __future__ import annotations

import struct
from typing import Dict, Tuple

from .checkpoint_errors import CheckpointError

# GGUF metadata value types: struct format of the scalar ones; 8 is a string, 9 an array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def read_gguf_metadata(path: str, prefixes: Tuple[str, ...]) -> Dict[str, object]:
    """The metadata of a GGUF file (versions 2 and 3) whose keys start with one of ``prefixes``, as
    Python values.

    Reads the key/value header only, sequentially: the gguf package's reader maps every
    array element to a numpy view and takes seconds on a 50k-token vocabulary.
    """
    with open(path, "rb") as f:
        def read(size: int) -> bytes:
            data = f.read(size)
            if len(data) != size:
                raise CheckpointError(path, "truncated GGUF metadata")
            return data

        def unpack(fmt: str) -> tuple:
            return struct.unpack("<" + fmt, read(struct.calcsize("<" + fmt)))

        def string() -> str:
            data = read(unpack("Q")[0])
            try:
                return data.decode("utf-8")
            except UnicodeDecodeError:
                raise CheckpointError(path, f"GGUF metadata string is not UTF-8: {data[:40]!r}") from None

        def value(kind: int):
            if kind in _GGUF_SCALARS:
                return unpack(_GGUF_SCALARS[kind])[0]
            if kind == _GGUF_STRING:
                return string()
            if kind == _GGUF_ARRAY:
                item_kind, count = unpack("IQ")
                if item_kind in _GGUF_SCALARS:
                    return list(unpack(f"{count}{_GGUF_SCALARS[item_kind]}"))
                return [value(item_kind) for _ in range(count)]
            raise CheckpointError(path, f"unknown GGUF value type {kind}")

        if f.read(4) != b"GGUF":
            raise CheckpointError(path, "not a GGUF file (it does not start with the GGUF magic)")
        version = unpack("I")[0]
        if version not in (2, 3):
            raise CheckpointError(path, f"unsupported GGUF version {version} (supported: 2, 3)")
        unpack("Q")  # tensor count
        out: Dict[str, object] = {}
        for _ in range(unpack("Q")[0]):
            key = string()
            item = value(unpack("I")[0])
            if key.startswith(prefixes):
                out[key] = item
    return out
