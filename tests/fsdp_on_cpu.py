"""Lets fairscale's FSDP run on CPU processes (gloo) for the tests.

fairscale 0.4 drives its collectives on CUDA streams: side streams that overlap communication with
computation, ordered by ``wait_stream`` and ``record_stream``. On a CPU every operation completes
before the next starts, so one do-nothing stream stands for all of them, and a tensor's ``.cuda()``
(fairseq's gradient-norm reduction under FSDP) stays on the CPU. What the tests exercise is
everything else: the FSDP units, sharding, all-gathers, reduce-scatters, fairseq's trainer and
checkpoints. gloo takes a reduce-scatter's inputs as a list, not as one flat tensor.
"""
import contextlib

import torch


class _Stream:
    def wait_stream(self, other):
        pass

    def synchronize(self):
        pass


_STREAM = _Stream()


def install() -> None:
    import fairscale.internal.reduce_scatter_bucketer as bucketer
    from fairscale.nn.data_parallel import fully_sharded_data_parallel as fsdp

    bucketer.enable_nccl_base_collectives = False
    fsdp.enable_nccl_base_collectives = False
    fsdp._get_default_cuda_device = lambda module: torch.device("cpu")
    torch.cuda.current_stream = lambda *args, **kwargs: _STREAM
    torch.cuda.stream = lambda stream: contextlib.nullcontext()
    torch.cuda.synchronize = lambda *args, **kwargs: None
    torch.Tensor.record_stream = lambda self, stream: None
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    setup_streams = fsdp.FullyShardedDataParallel._setup_streams

    def setup_cpu_streams(self):
        # fairscale creates (and shares with the inner units) its streams only when CUDA is there.
        available, stream_cls = torch.cuda.is_available, torch.cuda.Stream
        torch.cuda.is_available, torch.cuda.Stream = (lambda: True), (lambda *args, **kwargs: _STREAM)
        try:
            setup_streams(self)
        finally:
            torch.cuda.is_available, torch.cuda.Stream = available, stream_cls

    fsdp.FullyShardedDataParallel._setup_streams = setup_cpu_streams
