"""Lets torch's default ``weights_only=True`` loader read fairseq checkpoints.

fairseq stores its configuration (omegaconf containers) and a few plain Python
objects next to the weights. Only those classes are allow-listed; arbitrary pickles
still fail to load.
"""
from __future__ import annotations

import argparse
import collections
import typing

import numpy
import omegaconf
import torch
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
    ]


def allow_fairseq_checkpoints() -> None:
    torch.serialization.add_safe_globals(fairseq_checkpoint_globals())
