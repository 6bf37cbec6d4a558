"""Header-read speed of the manifest scripts: files per second, serial vs thread pool.

Writes a synthetic tree of small 16 kHz wav files (100 folders) in a temporary folder, then
times ``manifests.common.read_header_frames`` over all of them with each worker count (the
median of --repeats runs), twice: "warm", with the files in the page cache (the cost of opening
and parsing headers), and "cold", after evicting every file's pages with posix_fadvise
(DONTNEED; no root needed), so each read goes to the disk. With --latency-ms it adds a third,
modelled case: a sleep of that many milliseconds before each (warm) header read stands in for a
network file system's round trip (a blocking wait that, like a slow open, releases the GIL);
that row is a model, not a measurement of any real file system.

    python benchmarks/manifest_header_speed.py [--n-files 10000] [--workers 1 2 4 8 16] [--latency-ms 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np
import soundfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from manifests import common  # noqa: E402
from manifests.common import read_header_frames  # noqa: E402
from wavllm_fairseq.data.audio import audio_info_frames  # noqa: E402

FOLDERS = 100
"""The files are spread over this many folders, like speaker/chapter trees."""


def make_tree(root: str, n_files: int, samples: int) -> List[str]:
    wave = (0.1 * np.sin(np.arange(samples) / 10)).astype(np.float32)
    paths = []
    for i in range(n_files):
        folder = os.path.join(root, f"spk{i % FOLDERS:03d}")
        os.makedirs(folder, exist_ok=True)
        paths.append(os.path.join(folder, f"utt{i:06d}.wav"))
        soundfile.write(paths[-1], wave, 16000, subtype="PCM_16")
    return paths


def evict_from_page_cache(paths: List[str]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _with_latency(seconds: float):
    def probe(path: str) -> int:
        time.sleep(seconds)
        return audio_info_frames(path)

    return probe


def files_per_second(paths: List[str], workers: int, repeats: int, cold: bool) -> float:
    times = []
    for _ in range(repeats):
        if cold:
            evict_from_page_cache(paths)
        start = time.perf_counter()
        frames, errors = read_header_frames(paths, workers=workers, quiet=True)
        times.append(time.perf_counter() - start)
        assert len(frames) == len(paths) and not errors, errors
    return len(paths) / statistics.median(times)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-files", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=1600, help="samples per file (1600 = 0.1 s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="also time a modelled per-file latency of this many ms (one run per worker count)")
    parser.add_argument("--dir", help="where the temporary tree goes (default: the system's temp folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        start = time.perf_counter()
        paths = make_tree(tmp, args.n_files, args.samples)
        os.sync()  # written pages must be clean before they can be evicted
        print(f"wrote {len(paths)} wav files of {args.samples} samples in {time.perf_counter() - start:.1f} s "
              f"({platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()})")
        cases = ["warm cache", "cold cache"] + ([f"{args.latency_ms:g} ms modelled latency"] if args.latency_ms else [])
        for case in cases:
            serial = None
            for workers in args.workers:
                modelled = case.endswith("modelled latency")
                if modelled:
                    common.audio_info_frames = _with_latency(args.latency_ms / 1000)
                try:
                    rate = files_per_second(paths, workers, 1 if modelled else args.repeats,
                                            cold=case == "cold cache")
                finally:
                    common.audio_info_frames = audio_info_frames
                serial = serial or rate
                print(f"{case}, workers={workers:3d}: {rate:8.0f} files/s (x{rate / serial:.2f} vs "
                      f"workers={args.workers[0]})")

if __name__ == "__main__":
    main()
