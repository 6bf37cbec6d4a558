"""Converts the authors' released WavLLM checkpoint into a checkpoint of ours.

    python -m wavllm_fairseq.import_release final.pt --tokenizer tokenizer.model --out wavllm-release.pt

``final.pt`` (about 7.5 B parameters: Whisper large-v2's encoder, WavLM Base, LLaMA-2-7B-chat with
LoRA and the prompt-aware adapter) is memory-mapped, not read whole, and its pickle runs no code
(see :func:`wavllm_fairseq.models.wavllm.release.read_release_weights`). The output holds every weight
and its architecture, so ``fairseq-generate --path``, ``--finetune-from-model``, ``--init-from``
and ``--base-checkpoint`` read it as they read any checkpoint of ours. ``--dtype bf16`` halves its
size; the model computes in whatever dtype it is run with.
"""
from __future__ import annotations

import argparse
import os
from typing import Dict

import torch
from omegaconf import OmegaConf

from .errors import install_excepthook
from .models.common.checkpoint_errors import CheckpointError
from .models.wavllm.release import read_release_weights, release_architecture, release_name, to_our_weights, wavlm_config
from .models.wavllm import WavLLMConfig, WavLLMModel
from .tasks.wavllm import WavLLMTask, WavLLMTaskConfig

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _check_against_model(ours: Dict[str, torch.Tensor], names: Dict[str, str], model: WavLLMModel,
                         path: str) -> None:
    expected = model.state_dict()
    for key, param in expected.items():
        if key not in ours:
            source = release_name(key)
            raise CheckpointError(path, f"the release lacks a weight our model needs: {key!r}"
                                        + (f" (release name {source!r})" if source else ""),
                                  expected_shape=tuple(param.shape))
        if ours[key].shape != param.shape:
            raise CheckpointError(path, "release weight has the wrong shape for the model its other weights "
                                        "imply", key=names[key], expected_shape=tuple(param.shape),
                                  got_shape=tuple(ours[key].shape))
    extra = sorted(set(ours) - set(expected))
    if extra:
        raise CheckpointError(path, "release weight has no place in the model its other weights imply",
                              key=names[extra[0]], got_shape=tuple(ours[extra[0]].shape))


def checkpoint_config(architecture: dict, tokenizer: str) -> dict:
    """The ``cfg`` a fairseq checkpoint carries: this model and the task that reads its prompts."""
    model = OmegaConf.structured(WavLLMConfig(**architecture))
    model._name = "wavllm"
    task = OmegaConf.structured(WavLLMTaskConfig(data=".", tokenizer_path=os.path.abspath(tokenizer),
                                                 template="llama2", seed=1))
    task._name = "wavllm"
    return {"model": OmegaConf.to_container(model), "task": OmegaConf.to_container(task)}


def import_release(source: str, out: str, tokenizer: str, dtype: torch.dtype = torch.float32,
                   llm_head_dim: int = 128) -> dict:
    """Writes our checkpoint of the release at ``source`` to ``out``; returns the architecture."""
    weights = read_release_weights(source)
    architecture = release_architecture(weights, source, llm_head_dim)
    ours, names = to_our_weights(weights, source, wavlm_config(weights, source))
    cfg = checkpoint_config(architecture, tokenizer)
    task = WavLLMTask.setup_task(OmegaConf.create(cfg["task"]))
    with torch.device("meta"):
        model = WavLLMModel.build_model(OmegaConf.create(cfg["model"]), task)
    _check_against_model(ours, names, model, source)
    model.check_vocabulary(task.target_dictionary)
    state = {
        "cfg": cfg,
        "model": {k: v.to(dtype) if v.is_floating_point() else v for k, v in ours.items()},
        "optimizer_history": [{"criterion_name": "WavLLMCrossEntropy", "optimizer_name": None,
                               "lr_scheduler_state": {}, "num_updates": 0}],
        "extra_state": {"imported_from": os.path.abspath(source)},
    }
    partial = out + ".partial"
    torch.save(state, partial)
    os.replace(partial, out)
    return architecture


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release", help="the release's checkpoint (final.pt)")
    parser.add_argument("--out", required=True, help="our checkpoint to write")
    parser.add_argument("--tokenizer", required=True,
                        help="LLaMA-2's SentencePiece tokenizer.model (the release ships it in WavLLM/wavllm/tokenizer/)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="dtype of the written weights")
    parser.add_argument("--llm-head-dim", type=int, default=128,
                        help="width of one LLM attention head (128 for LLaMA-2): the shapes do not tell it")
    args = parser.parse_args(argv)
    try:
        architecture = import_release(args.release, args.out, args.tokenizer, DTYPES[args.dtype], args.llm_head_dim)
    except (CheckpointError, ValueError, OSError) as e:
        parser.exit(1, f"wavllm_fairseq.import_release: error: {e}\n")
    print(f"wrote {args.out}: LoRA rank {architecture['lora_rank']} on {architecture['lora_targets']}, "
          f"prompt-aware adapter {'yes' if architecture['prompt_adapter'] else 'no'}")


if __name__ == "__main__":
    install_excepthook()
    main()
