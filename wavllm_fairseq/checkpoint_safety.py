"""Lets torch's default ``weights_only=True`` loader read fairseq checkpoints.

fairseq stores its configuration (omegaconf containers) and a few plain Python
objects next to the weights, and sends a restored checkpoint to the other ranks the same
way. Only those classes are allow-listed; arbitrary pickles still fail to load.
"""
from __future__ import annotations

import argparse
import collections
import typing

import numpy
import omegaconf
import torch
from fairseq.distributed import utils as fairseq_distributed_utils
from omegaconf import base, nodes


def fairseq_checkpoint_globals() -> list:
    return [
        omegaconf.DictConfig,
        omegaconf.ListConfig,
        base.ContainerMetadata,
        base.Metadata,
        nodes.AnyNode,
        nodes.StringNode,
        nodes.IntegerNode,
        nodes.FloatNode,
        nodes.BooleanNode,
        nodes.EnumNode,
        typing.Any,
        dict,
        list,
        int,
        float,
        bool,
        str,
        collections.defaultdict,
        collections.OrderedDict,
        argparse.Namespace,
        numpy.core.multiarray.scalar if hasattr(numpy, "core") else numpy.dtype,
        numpy.dtype,
        # fairseq-train sends a checkpoint it restores from rank 0 to the other ranks as a pickle
        # whose tensors are replaced by these markers.
        fairseq_distributed_utils._TensorPlaceholder,
    ]


def allow_fairseq_checkpoints() -> None:
    torch.serialization.add_safe_globals(fairseq_checkpoint_globals())
