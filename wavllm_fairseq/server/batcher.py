"""Decodes concurrent requests together: one worker thread collects what arrives within a few
milliseconds, up to a batch limit, and decodes requests with the same decoding options as one
call of the inference core (which batches by length). Greedy answers do not depend on what
else is in the batch: rows are left-padded and masked, so each equals the request alone."""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from ..inference import Decoding, Query, WavLLM

ChoiceTokens = Callable[[int, List[int]], None]
"""Called from the worker thread with a choice's index and its tokens so far (streaming)."""


@dataclass
class Job:
    queries: List[Query]
    """One query per choice (OpenAI's ``n``)."""
    decoding: Decoding
    on_tokens: Optional[ChoiceTokens] = None
    result: Future = field(default_factory=Future)
    """Resolves to one Answer per query."""


class Batcher:
    def __init__(self, model: WavLLM, max_batch: int, wait_ms: float):
        self.model = model
        self.max_batch = max_batch
        """Most queries (choices) collected into one round of decoding."""
        self.wait_s = wait_ms / 1000
        """How long the first request of a round waits for others."""
        self.batch_sizes: List[int] = []
        """Queries decoded per round, for logging and tests."""
        self._jobs: "queue.Queue[Optional[Job]]" = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="wavllm-batcher", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> Future:
        self._jobs.put(job)
        return job.result

    def close(self) -> None:
        self._jobs.put(None)
        self._worker.join()

    def _collect(self) -> Tuple[List[Job], bool]:
        """The next round's jobs, and whether the batcher was closed."""
        first = self._jobs.get()
        if first is None:
            return [], True
        jobs, size = [first], len(first.queries)
        deadline = time.monotonic() + self.wait_s
        while size < self.max_batch:
            try:
                job = self._jobs.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._decode(jobs)
                return [], True
            jobs.append(job)
            size += len(job.queries)
        return jobs, False

    def _run(self) -> None:
        while True:
            jobs, closed = self._collect()
            if closed:
                return
            self._decode(jobs)

    def _decode(self, jobs: List[Job]) -> None:
        groups: Dict[Decoding, List[Job]] = {}
        for job in jobs:
            groups.setdefault(job.decoding, []).append(job)
        for decoding, group in groups.items():
            owners = [(job, choice) for job in group for choice in range(len(job.queries))]
            queries = [q for job in group for q in job.queries]
            self.batch_sizes.append(len(queries))
            streaming = any(job.on_tokens is not None for job in group)

            def on_tokens(row: int, tokens: List[int]) -> None:
                job, choice = owners[row]
                if job.on_tokens is not None:
                    job.on_tokens(choice, tokens)

            try:
                answers = self.model.answer(queries, decoding, on_tokens=on_tokens if streaming else None)
            except Exception as e:  # the requests fail, the worker keeps serving
                for job in group:
                    job.result.set_exception(e)
                continue
            start = 0
            for job in group:
                job.result.set_result(answers[start: start + len(job.queries)])
                start += len(job.queries)

