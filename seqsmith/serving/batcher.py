"""Dynamic batching: requests queue, one worker thread searches them together.

The worker takes the oldest job, then adds queued jobs whose search settings agree until the batch holds
``batch_tokens`` (source tokens x beam) or, when the batch before had company, the first job has waited
``max_wait`` seconds (a lone client is never kept waiting); one search runs
them all and each job gets its own results back. The queue is bounded in texts, so a flood of requests
is refused at the door (``QueueFull``) instead of growing memory. Jobs a client gave up on are dropped
before they are searched (``cancel``). A batch whose search fails is searched again job by job, so that
only the request with the bad input hears of the error.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The queue holds ``queue_texts`` texts already; the client should retry later."""


@dataclass(eq=False)
class Job:
    """One request's texts; ``key`` says which jobs may share a search, ``cost`` what it takes of a batch."""

    inputs: Sequence[Any]
    settings: Any
    key: str
    cost: int
    finish: Callable[[list[Any] | BaseException], None]
    enqueued: float = field(default_factory=time.monotonic)


Search = Callable[[list[Any], Any], list[Any]]


class Batcher:
    """``search(inputs, settings) -> one result per input``, run on batches of compatible jobs."""

    def __init__(
        self,
        search: Search,
        batch_tokens: int,
        max_wait: float,
        queue_texts: int,
        batching: bool = True,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.search, self.batch_tokens, self.max_wait = search, batch_tokens, max_wait
        self.queue_texts, self.batching, self.on_batch = queue_texts, batching, on_batch
        self.pending: deque[Job] = deque()
        self.queued_texts = 0
        self.last_batch = 0  # jobs in the batch before
        self.condition = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._work, name="seqsmith-batcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.condition:
            self.stopping = True
            self.condition.notify_all()
        self.thread.join(timeout=30)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.stopping

    def submit(self, job: Job) -> None:
        with self.condition:
            if self.queued_texts + len(job.inputs) > self.queue_texts:
                raise QueueFull(f"the queue holds {self.queued_texts} of {self.queue_texts} texts")
            self.pending.append(job)
            self.queued_texts += len(job.inputs)
            self.condition.notify_all()

    def cancel(self, job: Job) -> None:
        """The client gave up: a job still queued leaves the queue; a running one is searched anyway."""
        with self.condition:
            if job in self.pending:
                self._take(job)

    def _take(self, job: Job) -> None:
        self.pending.remove(job)
        self.queued_texts -= len(job.inputs)

    def _next_batch(self) -> list[Job] | None:
        """The oldest live job and the compatible ones that fit beside it; None once stopping."""
        with self.condition:
            while not self.pending and not self.stopping:
                self.condition.wait(timeout=1.0)
            if self.stopping:
                return None
            first = self.pending[0]
            self._take(first)
            batch, cost = [first], first.cost
            # wait for company only under load: a lone client's request starts at once
            deadline = first.enqueued + (self.max_wait if self.last_batch > 1 else 0.0)
            while self.batching and cost < self.batch_tokens:
                fitting = next(
                    (j for j in self.pending if j.key == first.key and cost + j.cost <= self.batch_tokens),
                    None,
                )
                if fitting is not None:
                    self._take(fitting)
                    batch.append(fitting)
                    cost += fitting.cost
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.stopping:
                    break
                self.condition.wait(timeout=remaining)
            self.last_batch = len(batch)
            return batch

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._run(batch)

    def _run(self, batch: list[Job]) -> None:
        inputs = [item for job in batch for item in job.inputs]
        started = time.monotonic()
        try:
            results = self.search(inputs, batch[0].settings)
        except Exception as error:  # the worker outlives a failed search
            if len(batch) == 1:
                batch[0].finish(error)
            else:  # one request's bad input must not fail the requests that shared its search
                for job in batch:
                    self._run([job])
            return
        if self.on_batch is not None:
            self.on_batch(len(inputs), time.monotonic() - started)
        start = 0
        for job in batch:
            job.finish(results[start : start + len(job.inputs)])
            start += len(job.inputs)
