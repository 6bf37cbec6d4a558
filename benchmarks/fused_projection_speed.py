"""Whether fusing a LLaMA block's projections pays on this machine: q, k, v (and gate, up) as
separate matrix products against one product with the concatenated weight, forward and the
input's gradient (the base weights are frozen under LoRA, so their gradient is never computed),
at the SmolLM2-135M widths, for several row counts (batch x positions). The two variants alternate.

    python benchmarks/fused_projection_speed.py [--rows 48 96 192 640] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

DIM, KV_DIM, FFN_DIM = 576, 192, 1536  # SmolLM2-135M: 9 query heads and 3 key/value heads of 64


def seconds(fn, calls: int = 10) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", nargs="+", type=int, default=[48, 96, 192, 640])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    separate = [torch.randn(n, DIM) for n in (DIM, KV_DIM, KV_DIM, FFN_DIM, FFN_DIM)]
    fused = [torch.cat(separate[:3]), torch.cat(separate[3:])]
    print("| rows | separate ms | fused ms | separate / fused |\n|---:|---:|---:|---:|")
    for rows in args.rows:
        x = torch.randn(rows, DIM, requires_grad=True)
        grads = [torch.randn(rows, w.shape[0]) for w in separate]
        fused_grads = [torch.cat(grads[:3], 1), torch.cat(grads[3:], 1)]

        def run_separate():
            torch.autograd.backward([F.linear(x, w) for w in separate], grads)

        def run_fused():
            torch.autograd.backward([F.linear(x, w) for w in fused], fused_grads)

        times = {run_separate: [], run_fused: []}
        for i in range(args.repeats):
            for fn in ((run_separate, run_fused) if i % 2 else (run_fused, run_separate)):
                times[fn].append(seconds(fn))
        a, b = statistics.median(times[run_separate]), statistics.median(times[run_fused])
        print(f"| {rows} | {a * 1e3:.2f} | {b * 1e3:.2f} | {a / b:.2f} |", flush=True)


if __name__ == "__main__":
    main()
