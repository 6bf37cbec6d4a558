"""Throughput and latency of ``wavllm_fairseq.serve`` with request batching, against the same
requests decoded one at a time.

For each number of concurrent clients, every client sends requests (one clip, one question,
greedy, a fixed answer length cap) back to back until all requests are answered; the script
reports requests per second and the median and 95th-percentile latency. It measures three ways
of answering the same requests:

* ``batched``: the server as ``serve`` runs it (requests arriving within ``--batch-wait-ms`` are
  decoded together, up to ``--batch-size``);
* ``unbatched``: the same server with a batch limit of 1 (each request decoded alone, in turn);
* ``sequential``: the inference core called directly, one request after another (no HTTP).

    python benchmarks/server_throughput.py --path CHECKPOINT --manifest DATA/test.tsv --requests 64
"""
from __future__ import annotations

import argparse
import base64
import logging
import os
import platform
import socket
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Tuple

import httpx
import torch
import uvicorn

from wavllm_fairseq import WavLLM
from wavllm_fairseq.data.manifest import read_manifest, resolve_audio_path
from wavllm_fairseq.inference import Decoding
from wavllm_fairseq.server.app import create_app
from wavllm_fairseq.server.openai_format import Limits


def requests_from(manifest: str, audio_root: str, count: int) -> List[Tuple[str, str]]:
    rows = [r for r in read_manifest(manifest) if r.with_speech and len(r.audio) == 1]
    if not rows:
        sys.exit(f"{manifest}: no rows with one audio file")
    return [(resolve_audio_path(rows[i % len(rows)].audio[0], audio_root, manifest), rows[i % len(rows)].prompt)
            for i in range(count)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, model: WavLLM, max_batch: int, wait_ms: float, max_tokens: int):
        app = create_app(model, "bench", Limits(max_new_tokens=max_tokens), max_batch=max_batch, batch_wait_ms=wait_ms)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.batcher = app.state.batcher

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join()


def summary(latencies: List[float], wall: float, tokens: List[int]) -> Dict[str, float]:
    ordered = sorted(latencies)
    return {"req_per_s": len(latencies) / wall, "tokens": statistics.mean(tokens), "median_s": statistics.median(ordered),
            "p95_s": ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]}


def through_server(port: int, bodies: List[dict], clients: int) -> Dict[str, float]:
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    latencies: List[float] = []
    tokens: List[int] = []

    def send(body):
        with httpx.Client(timeout=600) as client:
            start = time.perf_counter()
            response = client.post(url, json=body)
            response.raise_for_status()
            latencies.append(time.perf_counter() - start)
            tokens.append(response.json()["usage"]["completion_tokens"])

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, bodies))
    return summary(latencies, time.perf_counter() - start, tokens)


def sequential(model: WavLLM, requests: List[Tuple[str, str]], max_tokens: int) -> Dict[str, float]:
    latencies, tokens = [], []
    start = time.perf_counter()
    for path, prompt in requests:
        t = time.perf_counter()
        answer = model.answer([model.query(path, prompt)], Decoding(max_new_tokens=max_tokens))[0]
        latencies.append(time.perf_counter() - t)
        tokens.append(len(answer.tokens))
    return summary(latencies, time.perf_counter() - start, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True, help="checkpoint")
    parser.add_argument("--manifest", required=True, help="manifest whose clips and prompts are the requests")
    parser.add_argument("--audio-root", help="root of the manifest's relative audio paths; default: its folder")
    parser.add_argument("--requests", type=int, default=64, help="requests per measurement")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=24, help="answer length cap (greedy)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    for noisy in ("httpx", "httpcore"):  # fairseq's logging setup lets them log every request
        logging.getLogger(noisy).setLevel(logging.WARNING)

    model = WavLLM.from_checkpoint(args.path, device=args.device, dtype=args.dtype, batch_size=args.batch_size)
    requests = requests_from(args.manifest, args.audio_root, args.requests)
    bodies = []
    for path, prompt in requests:
        with open(path, "rb") as f:
            audio = {"data": base64.b64encode(f.read()).decode(), "format": os.path.splitext(path)[1][1:] or "wav"}
        bodies.append({"messages": [{"role": "user", "content": [
            {"type": "text", "text": prompt}, {"type": "input_audio", "input_audio": audio}]}],
            "max_tokens": args.max_tokens})
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads), device {args.device}, {args.dtype}; {args.requests} requests, answers <= {args.max_tokens} "
          f"tokens, greedy; checkpoint {args.path}")
    sequential(model, requests[:4], args.max_tokens)  # warm-up
    base = sequential(model, requests, args.max_tokens)
    print(f"sequential (inference core, no HTTP): {base['req_per_s']:.2f} req/s, "
          f"median {base['median_s']:.3f} s, p95 {base['p95_s']:.3f} s, {base['tokens']:.1f} tokens per answer")
    print("| clients | batched req/s | median s | p95 s | unbatched req/s | median s | p95 s | gain |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for clients in args.clients:
        results = {}
        for name, max_batch in (("batched", args.batch_size), ("unbatched", 1)):
            with RunningServer(model, max_batch, args.batch_wait_ms, args.max_tokens) as server:
                through_server(server.port, bodies[:2], 1)  # warm-up: the first requests start threads and pools
                results[name] = through_server(server.port, bodies, clients)
        b, u = results["batched"], results["unbatched"]
        print(f"| {clients} | {b['req_per_s']:.2f} | {b['median_s']:.3f} | {b['p95_s']:.3f} | {u['req_per_s']:.2f} | "
              f"{u['median_s']:.3f} | {u['p95_s']:.3f} | {b['req_per_s'] / u['req_per_s']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
