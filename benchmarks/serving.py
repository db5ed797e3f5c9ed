"""Serving benchmark: `hybrid serve` on loopback with the embedded model, one-at-a-time vs batched.

    .venv/bin/python benchmarks/serving.py                      # apps/legal, writes benchmarks/results/serving.json
    .venv/bin/python benchmarks/serving.py --levels 1,4 --requests 2,4 --modes batched   # a small run

What it measures, in one run on one machine, for each serving mode in turn (never both at once):

- ``one_at_a_time``: today's default, ``--concurrency 1``: answers wait for one another;
- ``batched``: ``HYBRID_API_BATCH_MAX_SIZE`` (default 8) with a short gathering window: concurrent
  answers share one batched generation (``hybrid.generation.batching``); one answer prepares its
  prompt at a time (``HYBRID_API_BATCH_PREP_CONCURRENCY``, ``--prep-concurrency``).

1. load: N = 1, 4, 8, 16 concurrent streaming clients, each asking the next question as soon as its
   answer ended, a fixed number of requests per level: answers/s, p50/p95 latency, time to first
   token, share of 429s (clients honour Retry-After). Each count is a multiple of the 8 questions,
   so every level asks the same mix; their prompts run from about 580 to 1,250 tokens. (N=1 used
   to ask only the first 3, all long: N=1 looked slow and the batching ratio better than it is.)
2. overload: 3x the largest capacity (concurrency + queue) of the modes run, sent at once, the
   same burst for every mode so their refusal times compare: rejected requests must come back
   (429) fast (p95 < 100 ms, and as fast as one at a time: the p95 ratios are in the results) and
   every request must end (nothing hangs); then the same burst again from plain sockets
   (``overload_raw``), whose timings carry less of the client's own GIL queue;
3. optionally (``--paired N``), the old library-vs-HTTP overhead check at N=1 on the first mode.

Requests force ``strategy: rag`` (``--strategy``): the legal app's router sends most of these
questions to ``extract``, which generates nothing, and generation is what batching is about.
Targets for the batched mode: answers/s at N=8 >= 2.5x that at N=1, p95 latency at N=8 <= 3x that
at N=1. The load average is recorded before and after each mode: the 2 cores are shared.

Only 127.0.0.1 is contacted; every request has a timeout and every phase a fixed request count.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._util import percentile  # noqa: E402

KEY = "bench-key-0123456789"
QUESTIONS = [
    "What is the maximum deposit a landlord may take?",
    "How much notice must a landlord give to end a periodic tenancy?",
    "Within how many hours must a data breach be notified?",
    "What is the limitation period for a contract claim?",
    "Can an employer read an employee's private email?",
    "What fee does the court charge to start a small claim?",
    "Is a non-compete clause enforceable after employment ends?",
    "How long does a consumer have to return faulty goods?",
]


def pct(xs: list[float], q: float) -> float | None:
    """The nearest observed value at percentile ``q`` (0-100), rounded; None for no values."""
    return round(percentile(xs, q, method="nearest"), 4) if xs else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RssSampler:
    """Peak resident memory of a process tree, sampled every 0.2 s."""

    def __init__(self, pid: int):
        import psutil

        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            self._stop.wait(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._t.join(2)
        return self.peak


def start_server(app: str, port: int, overrides: list[str], concurrency: int, queue: int, log: Path,
                 env_extra: dict[str, str] | None = None):
    import httpx

    cmd = [sys.executable, "-m", "hybrid", "serve", "--app", app, "--port", str(port), "--api-key", KEY,
           "--concurrency", str(concurrency), "--queue-size", str(queue), "--timeout", "900",
           "--drain-grace", "5"]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HYBRID_API_RATE_LIMIT": "0",
           **(env_extra or {})}
    fh = open(log, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1800:
        if proc.poll() is not None:
            raise SystemExit(f"hybrid serve exited {proc.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"hybrid serve not ready after 30 min; see {log}")


def in_worker_thread(fn, *args):
    """Call ``fn`` in a fresh thread, as the server runs answers. On a busy 2-core machine torch
    generation in the main thread (OpenMP team of 2, spinning at barriers) measured ~3x slower than
    in a worker thread, which would flatter HTTP; both sides therefore run in worker threads."""
    out: dict = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


STRATEGY = {"strategy": "rag"}  # set from --strategy in main()


def ask_json(client, url: str, app: str, q: str) -> tuple[float, dict]:
    t = time.perf_counter()
    r = client.post(url + "/v1/ask", json={"app": app, "question": q, **STRATEGY}, timeout=900)
    dt = time.perf_counter() - t
    r.raise_for_status()
    return dt, r.json()


def ask_stream(client, url: str, app: str, q: str) -> dict:
    """One streaming request: status, latency, time to first token."""
    t = time.perf_counter()
    out = {"status": None, "latency": None, "ttft": None}
    with client.stream("POST", url + "/v1/ask", json={"app": app, "question": q, "stream": True, **STRATEGY},
                       timeout=900) as r:
        out["status"] = r.status_code
        if r.status_code != 200:
            r.read()
            out["latency"] = time.perf_counter() - t
            out["retry_after"] = float(r.headers.get("Retry-After", "1"))
            return out
        for line in r.iter_lines():
            if out["ttft"] is None and line.startswith("event: token"):
                out["ttft"] = time.perf_counter() - t
    out["latency"] = time.perf_counter() - t
    return out


def load_level(url: str, app: str, clients: int, requests: int) -> dict:
    import httpx

    results: list[dict] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                try:
                    res = ask_stream(c, url, app, QUESTIONS[i % len(QUESTIONS)])
                except httpx.HTTPError as e:
                    res = {"status": f"error: {type(e).__name__}", "latency": None, "ttft": None}
                with lock:
                    results.append(res)
                if res["status"] == 429:  # a well-behaved client waits as told
                    time.sleep(res.get("retry_after", 1.0))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ok = [r for r in results if r["status"] == 200]
    rej = [r for r in results if r["status"] == 429]
    return {
        "clients": clients, "requests": len(results), "ok": len(ok), "rejected_429": len(rej),
        "other": [r["status"] for r in results if r["status"] not in (200, 429)],
        "share_429": round(len(rej) / len(results), 3) if results else None,
        "wall_s": round(wall, 2), "requests_per_s": round(len(results) / wall, 3),
        "answers_per_s": round(len(ok) / wall, 3),
        "latency_p50_s": pct([r["latency"] for r in ok], 50), "latency_p95_s": pct([r["latency"] for r in ok], 95),
        "ttft_p50_s": pct([r["ttft"] for r in ok if r["ttft"]], 50),
        "ttft_p95_s": pct([r["ttft"] for r in ok if r["ttft"]], 95),
        "reject_latency_p95_ms": pct([r["latency"] * 1000 for r in rej], 95),
    }


@contextlib.contextmanager
def client_gc_paused():
    """No garbage collection in this (client) process during a burst. By the overload phase the
    benchmark has made thousands of objects (clients, threads, responses); a full collection then
    stops every client thread, and the pause lands in the refusal times measured here."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def run_burst(clients: list) -> tuple[int, float]:
    """Run each client function in its own thread, all started at once with this process's GC
    paused; wait for them: (how many never finished, wall seconds)."""
    threads = [threading.Thread(target=f) for f in clients]
    t0 = time.perf_counter()
    with client_gc_paused():
        for t in threads:
            t.start()
        for t in threads:
            t.join(1800)
    return sum(t.is_alive() for t in threads), round(time.perf_counter() - t0, 2)


def burst_result(clients: int, results: list[tuple], hung: int, wall: float) -> dict:
    """A burst's figures from its (status, seconds) pairs: counts and the 429s' latency in ms."""
    rej = [dt * 1000 for st, dt in results if st == 429]
    return {"clients": clients, "finished": len(results), "hung": hung,
            "ok": sum(st == 200 for st, _ in results), "rejected_429": len(rej),
            "other": [st for st, _ in results if st not in (200, 429)],
            "reject_latency_p50_ms": pct(rej, 50), "reject_latency_p95_ms": pct(rej, 95),
            "reject_latency_max_ms": round(max(rej), 2) if rej else None, "wall_s": wall}


def overload(url: str, app: str, clients: int) -> dict:
    """All clients at once, one request each, no retries."""
    import httpx

    results: list[dict] = []
    lock = threading.Lock()
    go = threading.Barrier(clients)

    def one(i: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as c:
            go.wait()
            try:
                res = ask_stream(c, url, app, QUESTIONS[i % len(QUESTIONS)])
            except httpx.HTTPError as e:
                res = {"status": f"error: {type(e).__name__}", "latency": None}
        with lock:
            results.append(res)

    hung, wall = run_burst([functools.partial(one, i) for i in range(clients)])
    return burst_result(clients, [(r["status"], r["latency"]) for r in results], hung, wall)


def overload_raw(port: int, app: str, clients: int) -> dict:
    """The same burst from plain sockets: one prebuilt request each, read to the end of the response.

    ``overload`` times the refusals through httpx clients in as many Python threads. On 2 cores that
    client's own work queues behind its GIL: against a server whose queue was already full and did
    nothing else (apps.api.backend.FakeBackend), 39 httpx clients measured 429s at p95 39 / 76 ms,
    39 sockets 20 / 28 ms (two runs each, load ~2.5). This burst shows how much of the refusal time
    is the server's."""
    body = json.dumps({"app": app, "question": QUESTIONS[0], "stream": True, **STRATEGY}).encode()
    raw = (f"POST /v1/ask HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
           ).encode() + body
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    go = threading.Barrier(clients)

    def one() -> None:
        go.wait()
        t = time.perf_counter()
        status = 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=900) as s:
                s.sendall(raw)
                data = b""
                while chunk := s.recv(65536):  # Connection: close: the response ends with the socket
                    data += chunk
            status = int(data[9:12]) if data[:5] == b"HTTP/" else 0
        except (OSError, ValueError):
            pass
        with lock:
            results.append((status, time.perf_counter() - t))

    hung, wall = run_burst([one] * clients)
    return burst_result(clients, results, hung, wall)


MODES = {
    # name -> (concurrency, extra environment for `hybrid serve`)
    "one_at_a_time": lambda a: (1, {}),
    "batched": lambda a: (a.batch_size, {"HYBRID_API_BATCH_MAX_SIZE": str(a.batch_size),
                                          "HYBRID_API_BATCH_WINDOW_MS": str(a.batch_window_ms),
                                          "HYBRID_API_BATCH_PREP_CONCURRENCY": str(a.prep_concurrency)}),
}


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def paired_overhead(args, url: str, overrides: list[str]) -> dict:
    """Library call vs HTTP on the same questions at N=1 (greedy: identical work on both sides)."""
    import httpx

    from hybrid import pipeline

    bot = pipeline.Assistant.from_dir(args.app, overrides)
    bot.warm_up()
    lib, http, lib_total, server_total = [], [], [], []
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as c:
        in_worker_thread(lambda q: bot.ask(q, strategy=args.strategy), QUESTIONS[0])
        for i in range(args.paired):
            q = QUESTIONS[i % len(QUESTIONS)]
            t = time.perf_counter()
            a = in_worker_thread(lambda q: bot.ask(q, strategy=args.strategy), q)
            lib.append(time.perf_counter() - t)
            lib_total.append(a.timings.get("total", 0.0))
            dt, body = ask_json(c, url, bot.app.name, q)
            http.append(dt)
            server_total.append(body["timings"].get("total", 0.0))
            print(f"  paired {i + 1}/{args.paired}: library {lib[-1]:.2f}s, http {dt:.2f}s", flush=True)
    ratio = statistics.median(http) / statistics.median(lib) - 1
    added = [h - s for h, s in zip(http, server_total)]
    return {"questions": args.paired, "library_p50_s": pct(lib, 50), "http_p50_s": pct(http, 50),
            "overhead_ratio_median": round(ratio, 4),
            "pipeline_total_p50_s": {"library": pct(lib_total, 50), "server": pct(server_total, 50)},
            "http_added_ms_p50": round(statistics.median(added) * 1000, 2),
            "target": "HTTP adds < 10% to the median latency at N=1", "met": ratio < 0.10}


def run_mode(name: str, args, overrides: list[str], levels: list[int], counts: list[int], log: Path) -> dict:
    import httpx

    concurrency, env = MODES[name](args)
    if args.threads:
        env = {**env, "HYBRID_TORCH_THREADS": str(args.threads)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out: dict = {"server": {"concurrency": concurrency, "queue_size": args.queue_size, **env},
                 "load_avg_before": load_avg()}
    print(f"[{name}] starting hybrid serve on {url} (concurrency {concurrency}, {env or 'no batching'}) ...",
          flush=True)
    proc, ready_s = start_server(args.app, port, overrides, concurrency, args.queue_size, log, env)
    out["server"]["ready_s"] = round(ready_s, 1)
    sampler = RssSampler(proc.pid)
    app = Path(args.app).name
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as c:
            ask_json(c, url, app, QUESTIONS[0])  # warm: first answer pays one-off costs
        if args.paired and name == args.modes.split(",")[0]:
            out["library_vs_http_n1"] = paired_overhead(args, url, overrides)
        out["levels"] = []
        for n, count in zip(levels, counts):
            print(f"[{name}] load: {n} client(s), {count} requests ...", flush=True)
            lvl = load_level(url, app, n, count)
            lvl["load_avg_after"] = load_avg()
            print(f"  {lvl}", flush=True)
            out["levels"].append(lvl)
        cap = concurrency + args.queue_size
        burst = args.overload_clients
        print(f"[{name}] overload: {burst} clients at once (capacity {cap}) ...", flush=True)
        ov = overload(url, app, burst)
        ov.update({"capacity": cap, "target_ms": 100,
                   "met": bool(ov["hung"] == 0 and ov["reject_latency_p95_ms"] is not None
                               and ov["reject_latency_p95_ms"] < 100)})
        print(f"  {ov}", flush=True)
        out["overload_3x"] = ov
        print(f"[{name}] overload again from plain sockets: {burst} at once ...", flush=True)
        raw = overload_raw(port, app, burst)
        raw.update({"target_ms": 100, "met": bool(raw["hung"] == 0 and raw["reject_latency_p95_ms"] is not None
                                                  and raw["reject_latency_p95_ms"] < 100)})
        print(f"  {raw}", flush=True)
        out["overload_3x_plain_sockets"] = raw
        metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).text
        out["server_metrics_sample"] = [ln for ln in metrics.splitlines()
                                        if ln.startswith(("hybrid_routes_total", "hybrid_rejected_total"))]
    finally:
        proc.terminate()
        out["server_exit_code_after_sigterm"] = proc.wait(120)
        out["peak_rss_mb"] = round(sampler.stop() / 2**20, 1)
    out["load_avg_after"] = load_avg()
    sizes: dict[str, int] = {}
    for m in re.finditer(r"batch of (\d+) row", log.read_text(errors="replace")):
        sizes[m.group(1)] = sizes.get(m.group(1), 0) + 1
    if sizes:  # from the server's log: one line per batched generation (hybrid.generation.batching)
        out["batch_sizes"] = dict(sorted(sizes.items(), key=lambda kv: int(kv[0])))
    return out


def level(mode: dict, n: int) -> dict | None:
    return next((lvl for lvl in mode.get("levels", []) if lvl["clients"] == n), None)


def verdict(mode: dict) -> dict:
    """The batching targets, from one mode's own N=1 and N=8 levels."""
    one, eight = level(mode, 1), level(mode, 8)
    if not one or not eight or not one["answers_per_s"] or not one["latency_p95_s"]:
        return {"met": None, "why": "needs the N=1 and N=8 levels with answers"}
    tput = eight["answers_per_s"] / one["answers_per_s"]
    p95 = (eight["latency_p95_s"] or 0) / one["latency_p95_s"]
    ov = mode.get("overload_3x", {})
    return {"throughput_n8_over_n1": round(tput, 2), "throughput_target": 2.5,
            "p95_n8_over_n1": round(p95, 2), "p95_target": 3.0,
            "overload_met": ov.get("met"),
            "met": bool(tput >= 2.5 and p95 <= 3.0 and ov.get("met"))}


def main() -> None:
    global STRATEGY
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--app", default=str(ROOT / "apps" / "legal"))
    ap.add_argument("--strategy", default="rag", help="forced on every request ('auto' lets the router pick)")
    ap.add_argument("--max-new-tokens", type=int, default=32,
                    help="per answer; small keeps the run bounded on a 2-core CPU")
    ap.add_argument("--levels", default="1,4,8,16", help="concurrent clients per level ('none': overload only)")
    ap.add_argument("--requests", default="8,8,16,16",
                    help=f"requests per level; a multiple of the {len(QUESTIONS)} questions keeps the levels' mix equal")
    ap.add_argument("--modes", default="one_at_a_time,batched", help=f"from {', '.join(MODES)}, run in this order")
    ap.add_argument("--batch-size", type=int, default=8, help="batched mode: HYBRID_API_BATCH_MAX_SIZE")
    ap.add_argument("--batch-window-ms", type=float, default=15.0, help="batched mode: HYBRID_API_BATCH_WINDOW_MS")
    ap.add_argument("--prep-concurrency", type=int, default=1,
                    help="batched mode: HYBRID_API_BATCH_PREP_CONCURRENCY, answers preparing prompts at once "
                         "(0 = no limit, as before)")
    ap.add_argument("--queue-size", type=int, default=8, help="both modes")
    ap.add_argument("--threads", type=int, default=1,
                    help="HYBRID_TORCH_THREADS for both servers (1 was far faster on the busy 2-core machine: "
                         "8 rows decoded at ~0.3 s a step on 1 thread, ~3.3 s on 2); 0 = torch's default")
    ap.add_argument("--overload-clients", type=int, default=0,
                    help="clients in the overload burst, for every mode (0 = 3x the largest capacity "
                         "among the modes run)")
    ap.add_argument("--paired", type=int, default=0, help="library vs HTTP questions at N=1 (0 = skip)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serving.json"))
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    STRATEGY = {} if args.strategy == "auto" else {"strategy": args.strategy}
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise SystemExit(f"unknown mode(s) {', '.join(bad)}; known: {', '.join(MODES)}")
    levels = [int(x) for x in args.levels.split(",") if x.strip()] if args.levels != "none" else []
    counts = [int(x) for x in args.requests.split(",") if x.strip()] if levels else []
    if len(levels) != len(counts):
        raise SystemExit(f"--levels has {len(levels)} values but --requests has {len(counts)}")
    if any(c % len(QUESTIONS) for c in counts):
        print(f"note: --requests {args.requests}: not all multiples of {len(QUESTIONS)}, so the levels ask "
              "different mixes of questions (prompt lengths) and their answers/s do not compare", flush=True)
    overrides = [f"generation.max_new_tokens={args.max_new_tokens}"]
    from core.io import atomic_write_text, cache_dir

    log = cache_dir("bench") / "serving.server.log"  # the servers' own log, kept out of results/
    results: dict = {
        "benchmark": "serving: one-at-a-time vs batched", "app": Path(args.app).name,
        "strategy": args.strategy, "max_new_tokens": args.max_new_tokens,
        "torch_threads": args.threads or "torch default",
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": load_avg(),
                    "python": platform.python_version(), "platform": platform.platform()},
        "modes": {},
    }
    if Path(args.out).is_file():  # what the previous run measured stays next to the new figures
        try:
            old = json.loads(Path(args.out).read_text())
            results["previous_run"] = {k: old[k] for k in ("machine", "library_vs_http_n1", "levels", "overload_3x",
                                                           "modes", "targets_batched") if k in old}
        except (OSError, ValueError):
            pass
    if not args.overload_clients:  # one burst size for every mode: refusal times grow with the burst
        args.overload_clients = 3 * max(MODES[m](args)[0] + args.queue_size for m in modes)
    t0 = time.perf_counter()
    for m in modes:
        results["modes"][m] = run_mode(m, args, overrides, levels, counts, log.with_name(f"serving.{m}.server.log"))
        results["modes"][m]["targets"] = verdict(results["modes"][m])
    one, bat = results["modes"].get("one_at_a_time"), results["modes"].get("batched")
    if one and bat:
        results["batched_vs_one_at_a_time_answers_per_s"] = {
            str(n): round(level(bat, n)["answers_per_s"] / level(one, n)["answers_per_s"], 2)
            for n in levels if level(bat, n) and level(one, n) and level(one, n)["answers_per_s"]}
        results["batched_vs_one_at_a_time_429_p95"] = {  # the same burst; "as fast as before" is ~1
            kind: round(bat[kind]["reject_latency_p95_ms"] / one[kind]["reject_latency_p95_ms"], 2)
            for kind in ("overload_3x", "overload_3x_plain_sockets")
            if bat.get(kind, {}).get("reject_latency_p95_ms") and one.get(kind, {}).get("reject_latency_p95_ms")}
    results["machine"]["load_avg_at_end"] = load_avg()
    results["wall_s"] = round(time.perf_counter() - t0, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(results, indent=2) + "\n")
    print(json.dumps({m: r.get("targets") for m, r in results["modes"].items()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
