"""Reading the files pretrained checkpoints come in; every failure names the file."""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor

from .checkpoint_errors import CheckpointError

HF_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin")
"""Weight files of a Hugging Face folder, in the order they are looked for."""


def load_torch_file(path: str, mmap: bool = False) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``, whatever ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``
    says (it only changes calls that leave ``weights_only`` unset); ``mmap`` reads tensor data on demand."""
    try:
        return torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except Exception as e:  # torch raises RuntimeError / EOFError / pickle errors for damaged files
        raise CheckpointError(path, why_unreadable(e)) from e


def why_unreadable(error: Exception) -> str:
    """One line for a failed ``torch.load``: torch's own messages span lines and, for a refused
    object, suggest turning the safety off."""
    text = str(error)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return (f"refused: it holds a {refused.group(1)} object, which is not on the allow-list of checkpoint "
                "types; loading it could run code")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if "Weights only load failed" in first:
        first = "not a PyTorch file"
    first = first.split(". This is an internal")[0]  # miniz's advice after the reason
    return f"unreadable PyTorch file, truncated or damaged ({type(error).__name__}: {first})"


def is_hugging_face_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and any(
        os.path.isfile(os.path.join(path, name)) for name in HF_WEIGHT_FILES)


def hugging_face_weight_files(path: str) -> List[str]:
    """The folder's weight files: the shards its safetensors index names, or its single file."""
    index = os.path.join(path, HF_WEIGHT_FILES[0])
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(index, f"not a safetensors index with a weight_map ({type(e).__name__}: {e})") from e
        missing = [s for s in shards if not os.path.isfile(os.path.join(path, s))]
        if missing:
            raise CheckpointError(index, f"names shards that are not in the folder: {', '.join(missing)}")
        return [os.path.join(path, s) for s in shards]
    for name in HF_WEIGHT_FILES[1:]:
        if os.path.isfile(os.path.join(path, name)):
            return [os.path.join(path, name)]
    raise CheckpointError(path, f"no weights: none of {', '.join(HF_WEIGHT_FILES)}")


def read_tensors(file: str) -> Dict[str, Tensor]:
    """Every tensor of a safetensors or PyTorch weights file."""
    if not file.endswith(".safetensors"):
        return load_torch_file(file)
    from safetensors.torch import load_file

    try:
        return load_file(file)
    except Exception as e:  # SafetensorError for truncated / damaged headers or data
        raise CheckpointError(file, f"unreadable safetensors file, truncated or damaged ({type(e).__name__}: {e})") from e


def read_hugging_face_tensors(path: str) -> Tuple[Dict[str, Tensor], str]:
    """Every tensor of a Hugging Face folder, and the file to name in errors about them."""
    files = hugging_face_weight_files(path)
    tensors: Dict[str, Tensor] = {}
    for file in files:
        tensors.update(read_tensors(file))
    return tensors, files[0] if len(files) == 1 else os.path.join(path, HF_WEIGHT_FILES[0])
