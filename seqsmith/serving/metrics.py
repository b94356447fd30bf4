"""What ``GET /metrics`` reports, in the Prometheus text format (version 0.0.4).

Counters and histograms are kept per worker process; a Prometheus server scraping several workers behind
a load balancer sums them. Updates come from the event loop and the batcher thread, hence the lock.
"""

from __future__ import annotations

import threading
import time
from collections import deque

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
RATE_WINDOW = 60.0  # seconds the tokens/s gauge averages over


class Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets, self.counts = buckets, [0] * len(buckets)
        self.total, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[index] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        rows = [f'{name}_bucket{{le="{bound:g}"}} {n}' for bound, n in zip(self.buckets, self.counts)]
        return [
            *rows,
            f'{name}_bucket{{le="+Inf"}} {self.count}',
            f"{name}_sum {self.total:.6f}",
            f"{name}_count {self.count}",
        ]


class Metrics:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.responses: dict[int, int] = {}
        self.texts = self.output_tokens = self.batches = self.cancelled = 0
        self.search_seconds = 0.0
        self.latency = Histogram(LATENCY_BUCKETS)
        self.batch_texts = Histogram(BATCH_BUCKETS)
        self.recent: deque[tuple[float, int]] = deque()  # (time, output tokens) of recent requests

    def response(self, status: int, seconds: float) -> None:
        with self.lock:
            self.responses[status] = self.responses.get(status, 0) + 1
            self.latency.observe(seconds)

    def answered(self, texts: int, output_tokens: int) -> None:
        with self.lock:
            self.texts += texts
            self.output_tokens += output_tokens
            self.recent.append((time.monotonic(), output_tokens))
            self._forget_old()

    def batch_done(self, texts: int, seconds: float) -> None:
        with self.lock:
            self.batches += 1
            self.search_seconds += seconds
            self.batch_texts.observe(texts)

    def cancel(self) -> None:
        with self.lock:
            self.cancelled += 1

    def _forget_old(self) -> None:
        """Drop what fell out of the rate window: the deque holds at most a minute of requests."""
        now = time.monotonic()
        while self.recent and self.recent[0][0] < now - RATE_WINDOW:
            self.recent.popleft()

    def tokens_per_second(self) -> float:
        self._forget_old()
        return sum(n for _, n in self.recent) / RATE_WINDOW

    def render(self, queued_texts: int) -> str:
        with self.lock:
            lines = [
                "# HELP seqsmith_requests_total HTTP responses by status code.",
                "# TYPE seqsmith_requests_total counter",
            ]
            lines += [
                f'seqsmith_requests_total{{code="{code}"}} {n}' for code, n in sorted(self.responses.items())
            ]
            for name, kind, value, text in [
                ("seqsmith_texts_total", "counter", self.texts, "Texts answered."),
                ("seqsmith_output_tokens_total", "counter", self.output_tokens, "Tokens generated."),
                ("seqsmith_batches_total", "counter", self.batches, "Searches run."),
                (
                    "seqsmith_search_seconds_total",
                    "counter",
                    round(self.search_seconds, 6),
                    "Time in search.",
                ),
                ("seqsmith_cancelled_total", "counter", self.cancelled, "Requests the client gave up on."),
                ("seqsmith_queue_texts", "gauge", queued_texts, "Texts waiting for a search."),
                (
                    "seqsmith_tokens_per_second",
                    "gauge",
                    round(self.tokens_per_second(), 3),
                    f"Output tokens/s over the last {RATE_WINDOW:g} s.",
                ),
            ]:
                lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
            lines += [
                "# HELP seqsmith_request_seconds Time from arrival to answer.",
                "# TYPE seqsmith_request_seconds histogram",
            ]
            lines += self.latency.lines("seqsmith_request_seconds")
            lines += [
                "# HELP seqsmith_batch_texts Texts per search.",
                "# TYPE seqsmith_batch_texts histogram",
            ]
            lines += self.batch_texts.lines("seqsmith_batch_texts")
        return "\n".join(lines) + "\n"
