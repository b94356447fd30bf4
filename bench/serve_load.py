"""Load test of `seqsmith serve`: throughput and latency with batching on and off, memory, hostile requests.

    python bench/serve_load.py runs/serve_m30k/model                      # 5 minutes a load level
    python bench/serve_load.py runs/serve_m30k/model --minutes 0.2 --baseline-minutes 0.1   # a smoke run

Each server is `seqsmith serve` in its own process on loopback (2 torch threads); the clients are this
process: N asyncio connections with keep-alive, each sending one test2016 sentence a request (cycling
through the file) and waiting for the answer before the next. Every loop is bounded in time and count.
Per level: requests/s, p50/p95/p99 latency, status codes. The batched server also reports its resident
memory after 1,000 and after 20,000 requests (or its last request), and, during the 32-client level, a
hostile client sends a set of bad requests (huge options and bodies, broken JSON and UTF-8, 10k texts,
a body that stalls, a client that hangs up) and records what each got back. A last phase runs a server
with a small queue under 128 clients: it must answer 429, not time out or fail.
Writes docs/benchmarks/serving.json and the "serving" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))

from measure import MULTI30K_TEST, machine, repo_path  # noqa: E402
from tables import BENCHMARKS_MD, figures_path, invocation, write_section  # noqa: E402

CLIENT_TIMEOUT = 60.0
MAX_REQUESTS_PER_LEVEL = 400_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, model_dir: str, settings: list[str], log: Path) -> None:
        self.port = free_port()
        command = [
            sys.executable,
            "-m",
            "seqsmith.cli",
            "serve",
            model_dir,
            "--port",
            str(self.port),
            *settings,
        ]
        self.log = log.open("w", encoding="utf-8")
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}; see {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server did not become ready in 120 s; see {log}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def request_bytes(body: bytes, extra: str = "") -> bytes:
    head = f"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def client(
    port: int, texts: list[str], offset: int, more: Callable[[], bool], log: list[tuple[int, float]]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    position = offset
    try:
        while more():
            body = json.dumps({"texts": [texts[position % len(texts)]]}).encode()
            position += 1
            started = time.monotonic()
            writer.write(request_bytes(body))
            status, _ = await asyncio.wait_for(read_response(reader), CLIENT_TIMEOUT)
            log.append((status, time.monotonic() - started))
            if status == 429:  # as a polite client does: wait as long as Retry-After says (1 s)
                await asyncio.sleep(1.0)
    finally:
        writer.close()


def detail_of(reply: bytes) -> str:
    """The server's ``detail``, or the start of a body that is not seqsmith's JSON (uvicorn's own errors)."""
    try:
        return str(json.loads(reply).get("detail", ""))
    except (ValueError, AttributeError):
        return reply[:120].decode("utf-8", "replace")


async def hostile(port: int) -> list[dict[str, Any]]:
    """Each bad request once; what the server said back (status and the start of its detail)."""

    def body(payload: Any) -> bytes:
        return request_bytes(json.dumps(payload).encode())

    chunk = b"a" * 65536
    chunked = b"".join(b"10000\r\n" + chunk + b"\r\n" for _ in range(32))  # 2 MB, no length announced
    cases = [
        ("max_length_b 1e8", body({"texts": ["May 1 2020"], "options": {"max_length_b": 10**8}})),
        ("beam_size 1e6", body({"texts": ["A dog."], "options": {"beam_size": 10**6}})),
        ("nbest above beam", body({"texts": ["A dog."], "options": {"nbest": 50}})),
        ("batch_tokens 1e9", body({"texts": ["A dog."], "options": {"batch_tokens": 10**9}})),
        ("5,000-character option name", body({"texts": ["A dog."], "options": {"x" * 5000: 1}})),
        ("10k texts", body({"texts": ["A dog."] * 10_000})),
        ("900k-character text", body({"texts": ["a" * 900_000]})),
        (
            "100 MB announced",
            request_bytes(b"")[: -len("Content-Length: 0\r\n\r\n")]
            + b"Content-Length: 100000000\r\n\r\n"
            + chunk,
        ),
        (
            "2 MB chunked",
            request_bytes(b"")[: -len("Content-Length: 0\r\n\r\n")]
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + chunked
            + b"0\r\n\r\n",
        ),
        ("malformed JSON", request_bytes(b'{"texts": ["a"')),
        ("non-UTF-8", request_bytes(b'{"texts": ["\xff\xfe"]}')),
        ("nested 100k deep", request_bytes(b"[" * 100_000 + b"]" * 100_000)),
        (
            "100k-digit number",
            request_bytes(b'{"texts": ["a"], "options": {"beam_size": ' + b"9" * 100_000 + b"}}"),
        ),
    ]
    results = []
    for name, raw in cases:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(raw)
            await asyncio.wait_for(writer.drain(), 10.0)
        except (ConnectionError, TimeoutError):
            pass  # the server answered and closed before it read all of it; its answer is still there
        try:
            status, reply = await asyncio.wait_for(read_response(reader), CLIENT_TIMEOUT)
            detail = detail_of(reply)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, IndexError) as error:
            status, detail = -1, f"no answer: {type(error).__name__}"
        writer.close()
        results.append({"request": name, "status": status, "detail": str(detail)[:120]})
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # a body that stalls half-way
    writer.write(request_bytes(b'{"texts": ["A dog."]}')[:-8])
    started = time.monotonic()
    status, reply = await asyncio.wait_for(read_response(reader), CLIENT_TIMEOUT)
    writer.close()
    results.append(
        {
            "request": "body stalls",
            "status": status,
            "detail": f"{detail_of(reply)[:90]} (after {time.monotonic() - started:.1f} s)",
        }
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # hangs up before the answer
    writer.write(request_bytes(json.dumps({"texts": ["A man is sleeping on a bench."] * 64}).encode()))
    await writer.drain()
    writer.close()
    results.append({"request": "client hangs up", "status": None, "detail": "see seqsmith_cancelled_total"})
    return results


def summary(log: list[tuple[int, float]], seconds: float) -> dict[str, Any]:
    latencies = sorted(t for status, t in log if status == 200)

    def quantile(q: float) -> float | None:
        return (
            round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)
            if latencies
            else None
        )

    return {
        "requests": len(log),
        "ok_per_second": round(len(latencies) / seconds, 2),
        "p50_ms": quantile(0.5),
        "p95_ms": quantile(0.95),
        "p99_ms": quantile(0.99),
        "status": dict(sorted(Counter(str(status) for status, _ in log).items())),
    }


async def level(
    server: Server,
    texts: list[str],
    clients: int,
    seconds: float,
    watch: dict[str, Any],
    with_hostile: bool,
    min_requests: int = 0,
) -> dict[str, Any]:
    """``clients`` at once for ``seconds``, or until ``min_requests`` (at most three times as long)."""
    log: list[tuple[int, float]] = []
    started = time.monotonic()
    stop_at, hard_stop = started + seconds, started + 3 * seconds

    def more() -> bool:
        now = time.monotonic()
        if len(log) >= MAX_REQUESTS_PER_LEVEL:
            return False
        return now < stop_at or (len(log) < min_requests and now < hard_stop)

    tasks = [asyncio.create_task(client(server.port, texts, i * 37, more, log)) for i in range(clients)]

    async def memory() -> None:
        while more():
            total = watch["before"] + len(log)
            if "rss_after_1000" not in watch and total >= 1000:
                watch["rss_after_1000"] = rss_mb(server.process.pid)
            if "rss_after_20000" not in watch and total >= 20_000:
                watch["rss_after_20000"] = rss_mb(server.process.pid)
            await asyncio.sleep(0.2)

    extra = [asyncio.create_task(memory())]
    bad: list[dict[str, Any]] = []
    if with_hostile:

        async def attack() -> None:
            await asyncio.sleep(min(10.0, seconds / 3))
            bad.extend(await hostile(server.port))

        extra.append(asyncio.create_task(attack()))
    await asyncio.gather(*tasks, *extra)
    watch["before"] += len(log)
    elapsed = time.monotonic() - started
    result = {"clients": clients, "seconds": round(elapsed, 1), **summary(log, elapsed)}
    if bad:
        result["hostile"] = bad
    return result


async def metrics_text(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    _, body = await read_response(reader)
    writer.close()
    return body.decode()


def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = [line for line in MULTI30K_TEST.read_text(encoding="utf-8").splitlines() if line.strip()]
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"levels": []}
    for batching, minutes, levels in [
        (True, args.minutes, args.clients),
        (False, args.baseline_minutes, args.clients),
    ]:
        server = Server(
            args.model_dir, [f"batching={str(batching).lower()}"], logs / f"server-batching-{batching}.log"
        )
        watch: dict[str, Any] = {"before": 0}
        try:
            for clients in levels:
                seconds = 60 * (args.minutes if (not batching and clients == 32) else minutes)
                with_hostile = batching and clients == 32
                # the memory check runs inside one load level: 1,000 and 20,000 requests at 32 clients
                least = 20_000 if with_hostile else 0
                outcome = asyncio.run(level(server, texts, clients, seconds, watch, with_hostile, least))
                outcome["batching"] = batching
                print(json.dumps({k: v for k, v in outcome.items() if k != "hostile"}), flush=True)
                results["levels"].append(outcome)
            if batching:
                watch["rss_last"] = rss_mb(server.process.pid)
                watch["requests"] = watch.pop("before")
                results["memory"] = watch
                metrics = asyncio.run(metrics_text(server.port))
                results["cancelled_total"] = next(
                    float(line.split()[1])
                    for line in metrics.splitlines()
                    if line.startswith("seqsmith_cancelled_total")
                )
        finally:
            server.stop()
    server = Server(args.model_dir, ["queue_texts=32"], logs / "server-small-queue.log")
    try:
        outcome = asyncio.run(level(server, texts, 128, 60 * args.baseline_minutes, {"before": 0}, False))
        results["small_queue"] = {"queue_texts": 32, **outcome}
        print(json.dumps(results["small_queue"]), flush=True)
    finally:
        server.stop()
    return results


def table(results: dict[str, Any]) -> str:
    rows = [
        "| batching | clients | minutes | requests | answered/s | p50 ms | p95 ms | p99 ms | status codes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["levels"]:
        codes = ", ".join(f"{code}: {n}" for code, n in r["status"].items())
        rows.append(
            f"| {'on' if r['batching'] else 'off'} | {r['clients']} | {r['seconds'] / 60:.1f} | "
            f"{r['requests']} | {r['ok_per_second']} | {r['p50_ms']} | {r['p95_ms']} | {r['p99_ms']} "
            f"| {codes} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model_dir")
    parser.add_argument(
        "--minutes", type=float, default=5.0, help="per load level with batching on (and off at 32)"
    )
    parser.add_argument("--baseline-minutes", type=float, default=1.0, help="other levels with batching off")
    parser.add_argument("--clients", type=int, nargs="+", default=[32, 1, 8, 128])
    parser.add_argument("--logs", default="runs/bench/serve_load")
    parser.add_argument("--out", default=str(figures_path("serving.json")))
    args = parser.parse_args()
    load = [round(x, 2) for x in os.getloadavg()]
    results = run(args)
    on = {r["clients"]: r for r in results["levels"] if r["batching"]}
    off = {r["clients"]: r for r in results["levels"] if not r["batching"]}
    ratio = {
        c: round(on[c]["ok_per_second"] / off[c]["ok_per_second"], 2)
        for c in on
        if c in off and off[c]["ok_per_second"]
    }
    memory = results["memory"]
    growth = (
        memory.get("rss_after_20000", memory["rss_last"]) / memory["rss_after_1000"] - 1
        if "rss_after_1000" in memory
        else None
    )
    record = {
        "model_dir": repo_path(args.model_dir),
        "machine": machine(load),
        "throughput_ratio_on_over_off": ratio,
        "rss_growth_1000_to_20000": round(growth, 4) if growth is not None else None,
        **results,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    hostile = next((r["hostile"] for r in results["levels"] if "hostile" in r), [])
    lines = [
        "## Serving under load (`bench/serve_load.py`)",
        "",
        f"`{invocation()}`; host: {record['machine']['processor']}, "
        f"{record['machine']['cpus']} cores; server and clients share them. "
        "One test2016 sentence a request, beam 5; every client waits for its answer before it sends again.",
        "",
        table(results),
        "",
        "Answered/s with batching on over off, by clients: "
        + ", ".join(f"{c}: {r}x" for c, r in ratio.items())
        + ".",
        "Resident memory of the batched server, at 32 clients (its first level, run until 20,000 requests): "
        f"{memory.get('rss_after_1000', float('nan')):.0f} MB after 1,000 requests, "
        f"{memory.get('rss_after_20000', memory['rss_last']):.0f} MB after {min(20000, memory['requests'])} "
        f"({100 * (growth or 0):+.1f}%); {memory['rss_last']:.0f} MB after all {memory['requests']} requests "
        "of every level.",
        f"Small queue (queue_texts=32, 128 clients): status codes {results['small_queue']['status']}.",
        "",
        "Hostile requests sent during the 32-client batched level:",
        "",
        "| request | status | detail |",
        "|---|---|---|",
        *(f"| {h['request']} | {h['status']} | {h['detail'].replace('|', '/')} |" for h in hostile),
        "\nRequests whose client hung up and were dropped unsearched (seqsmith_cancelled_total): "
        f"{results.get('cancelled_total')}.",
    ]
    write_section(BENCHMARKS_MD, "serving", "\n".join(lines))


if __name__ == "__main__":
    main()
