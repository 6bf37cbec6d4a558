"""Joins the per-rank files of a fully-sharded training checkpoint into one checkpoint.

Fully-sharded training (``--ddp-backend fully_sharded --use-sharded-state``) saves each rank's
shard next to the others: ``checkpoint_last-shard0.pt``, ``checkpoint_last-shard1.pt``, ...
This writes ``checkpoint_last_consolidated.pt``, a checkpoint like any other: ``fairseq-generate
--path`` reads it, and the next stage starts from it (``--finetune-from-model``, or ``--init-from``
when that stage is fully sharded too). Not ``checkpoint_last.pt``: given that name, fairseq reads
``checkpoint_last-shard0.pt`` when it exists::

    python -m wavllm_fairseq.consolidate_checkpoint SAVE_DIR/checkpoint_last.pt

The optimiser state stays in the shards (it only resumes the sharded run).
"""
from __future__ import annotations

import argparse
import os
import re
from typing import Dict, List, Optional

import torch

from .errors import install_excepthook
from .models.common.checkpoint_errors import CheckpointError
from .models.common.checkpoint_files import load_torch_file


def shard_paths(checkpoint: str) -> List[str]:
    """``X-shard0.pt``, ``X-shard1.pt``, ... for ``X.pt``: every rank's file, in rank order."""
    stem, ext = os.path.splitext(checkpoint)
    folder = os.path.dirname(checkpoint) or "."
    if not os.path.isdir(folder):
        raise CheckpointError(checkpoint, f"no folder {folder}")
    pattern = re.compile(re.escape(os.path.basename(stem)) + r"-shard(\d+)" + re.escape(ext) + "$")
    ranks = sorted(int(m.group(1)) for m in map(pattern.match, os.listdir(folder)) if m)
    if not ranks:
        raise CheckpointError(checkpoint, f"no shard files {stem}-shard<RANK>{ext} next to it")
    if ranks != list(range(len(ranks))):
        missing = sorted(set(range(max(ranks) + 1)) - set(ranks))
        raise CheckpointError(checkpoint, f"the shards of rank(s) {missing} are missing")
    return [f"{stem}-shard{r}{ext}" for r in ranks]


def _num_updates(state: dict) -> int:
    history = state.get("optimizer_history") or [{}]
    return history[-1].get("num_updates", -1)


def _in_unit(unit: dict, name: str) -> str:
    """A parameter's state-dict key from its name inside an FSDP unit's metadata."""
    return f"{unit['fsdp_path']}.{name}" if unit["fsdp_path"] else name


def consolidate_weights(paths: List[str], states: List[dict]) -> Dict[str, torch.Tensor]:
    """The full weights from every rank's shard, using the FSDP metadata saved with them."""
    metadata = [s["fsdp_metadata"] for s in states]
    models = [s["model"] for s in states]
    weights = {}
    for unit_index, unit in enumerate(metadata[0]["param_metadata"]):
        for name, param in unit["params"].items():
            key = _in_unit(unit, name)
            if key not in models[0]:
                continue  # a pretrained component the checkpoint leaves out (read from its own file)
            numel = sum(param["numels"])
            shards = []
            for path, model, meta in zip(paths, models, metadata):
                if key not in model:
                    raise CheckpointError(path, "missing a weight the first shard has", key=key)
                shard = model[key].reshape(-1)
                padding = meta["param_metadata"][unit_index]["params"][name]["padding"]
                shards.append(shard[: shard.numel() - padding])
            if all(s.numel() == numel for s in shards):
                # fairscale leaves the root unit's frozen weights gathered after a backward pass:
                # every rank then saved the whole tensor.
                full = shards[0]
            else:
                full = torch.cat(shards)
            if full.numel() != numel:
                raise CheckpointError(paths[0], f"the shards hold {full.numel()} values, not {numel}: "
                                      f"were they saved by one run of {len(paths)} ranks?", key=key)
            for sub_name, shape, part in zip(param["names"], param["shapes"], full.split(param["numels"])):
                weights[_in_unit(unit, sub_name)] = part.view(shape)
    for name in metadata[0]["buffer_names"]:
        if name in models[0]:
            weights[name] = models[0][name]
    return weights


def consolidated_path(checkpoint: str) -> str:
    stem, ext = os.path.splitext(checkpoint)
    return f"{stem}_consolidated{ext}"


def consolidate(checkpoint: str, output: Optional[str] = None) -> str:
    """Joins the shard files of ``checkpoint`` (as fairseq-train named it) into ``output``
    (default: :func:`consolidated_path`); returns the path written."""
    paths = shard_paths(checkpoint)
    states = [load_torch_file(p) for p in paths]
    for path, state in zip(paths, states):
        if "fsdp_metadata" not in state:
            raise CheckpointError(path, "not a fully-sharded checkpoint shard (no fsdp_metadata)")
    updates = {_num_updates(s) for s in states}
    if len(updates) > 1:
        raise CheckpointError(checkpoint, "the shards come from different updates "
                              f"({', '.join(f'{p}: {_num_updates(s)}' for p, s in zip(paths, states))})")
    state = dict(states[0])
    state["model"] = consolidate_weights(paths, states)
    del state["fsdp_metadata"]
    state.pop("last_optimizer_state", None)
    output = output or consolidated_path(checkpoint)
    torch.save(state, output)
    return output


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="the checkpoint as fairseq-train names it, e.g. "
                                           "SAVE_DIR/checkpoint_last.pt for SAVE_DIR/checkpoint_last-shard<RANK>.pt")
    parser.add_argument("--output", help="where to write (default: SAVE_DIR/checkpoint_last_consolidated.pt)")
    args = parser.parse_args(argv)
    try:
        print(consolidate(args.checkpoint, args.output))
    except CheckpointError as e:
        parser.exit(1, f"wavllm_fairseq.consolidate_checkpoint: error: {e}\n")


if __name__ == "__main__":
    install_excepthook()
    main()
