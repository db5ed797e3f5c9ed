"""Dynamic batching for an in-process ``HFGenerator``: concurrent requests share one batched ``generate``.

    batched = BatchingGenerator(HFGenerator(), max_batch=8, window=0.015)
    batched.generate(messages)                 # from many threads at once: each waits for company
    for piece in batched.stream(messages):     # each request streams its own row of the batch
        ...                                    # closing it stops that row only; the batch goes on
    batched.stats.as_dict()                    # batches, rows, largest batch, sizes, cancelled rows

How a batch forms: the first waiting request opens a gathering window (``window`` seconds). The
batch starts when the window closes or when ``max_batch`` compatible requests wait, whichever comes
first. A request announced with ``with batched.expect():`` (the server, while it retrieves) holds
the batch past the window, up to ``max_wait`` after the latest arrival, until it arrives. With
``max_prep=N``, at most N announced requests prepare at once: ``expect()`` waits for one of N prep
slots, and the slot is handed on when the request reaches ``generate``/``stream`` (its prompt is
built) or the block exits. Requests that arrive while a batch
runs wait for the next one, and their window counts from the end of that batch: the clients whose
answers it just finished get the same chance to join as at a fresh start (in the serving benchmark
the rows that stopped early came back first and, before this, ran as a batch of 2 while the other
6 rejoined behind it). Compatible means the
same adapter and the same sampling settings (temperature, top_p, repetition penalty, and the seed
when sampling), since one ``generate`` call takes one of each; ``max_new_tokens`` and stop strings
may differ per request.

Each row is stopped by its own criteria (``row_criteria``, also behind ``HFGenerator.generate_batch``):
its stop strings, its ``max_new_tokens``, EOS, or its cancel event. A stopped row no longer streams; the other rows go
on. The prompt rows are left-padded to one width by ``HFGenerator._run``, as for the eval runner's
``generate_batch``. Greedy answers in a batch equal the unbatched ones up to the float differences
that padding (and bf16 matmuls for batches on CPUs with native bf16) brings.

Not done: continuous batching (a request joining a batch that is already decoding); transformers'
``generate`` takes its rows once, and a request arriving mid-batch waits for the next one.
Sampled answers in a batch share one seeded generator, so they are not reproducible per request.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from core.errors import InputError
from core.protocols import Generation, GenerationParams, Message
from hybrid.generation.controls import stop_in_tail
from hybrid.generation.params import check_params
from hybrid.generation.stream import GenerationStream, start_stream

log = logging.getLogger(__name__)

__all__ = ["BatchingGenerator", "BatchStats", "row_criteria", "rows_for"]

_POLL = 0.05  # how often a waiting request looks at its cancel event (seconds); not a deadline


@dataclass
class BatchStats:
    """Counters of what the batcher did, for tests and /metrics-style reporting."""

    batches: int = 0
    rows: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it
    cancelled_rows: int = 0  # rows stopped by their cancel event while their batch ran
    withdrawn: int = 0  # requests cancelled before their batch started (never generated)

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "rows": self.rows, "largest": self.largest,
                "sizes": {str(k): v for k, v in sorted(self.sizes.items())},
                "cancelled_rows": self.cancelled_rows, "withdrawn": self.withdrawn}


class _Request:
    """One generate/stream call waiting for, or riding in, a batch."""

    def __init__(self, ids: list[int], adapter: str | None, params: GenerationParams, cancel: threading.Event,
                 streamer: Any, counter: list[int], on_finish: Any = None):
        self.ids = ids
        self.adapter = adapter
        self.params = params
        self.cancel = cancel
        self.streamer = streamer
        self.counter = counter
        self.tokens: list[int] = []
        self.arrived = time.monotonic()
        self.done = threading.Event()
        self.finished = False  # stopped generating (set only by the batch thread)
        self.error: BaseException | None = None
        self.on_finish = on_finish  # called once, when the row stops generating

    def key(self) -> tuple:
        p = self.params
        return (self.adapter, p.temperature, p.top_p, p.repetition_penalty, p.seed if p.temperature > 0 else None)

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            if self.streamer is not None:
                self.streamer.end()
            if self.on_finish is not None:
                self.on_finish()
        self.done.set()


def rows_for(prompts: list[list[int]], adapter: str | None, params: GenerationParams,
             on_finish: list[Any] | None = None) -> list[_Request]:
    """Rows for ``row_criteria`` that share one adapter and params (``HFGenerator.generate_batch``)."""
    return [_Request(ids, adapter, params, threading.Event(), None, [0], on_finish[i] if on_finish else None)
            for i, ids in enumerate(prompts)]


def row_criteria(rows: list[_Request], tokenizer: Any, eos: set[int], stats: BatchStats | None = None) -> Any:
    """A StoppingCriteria that feeds each row's new token to its own streamer and stops each row on
    its own: EOS, its max_new_tokens, its stop strings, or its cancel event. transformers calls it
    once per step, after the step's token joined ``input_ids``."""
    import torch
    from transformers import StoppingCriteria

    class _Criteria(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            last = input_ids[:, -1].tolist()
            done = []
            for i, r in enumerate(rows):
                if not r.finished and r.cancel.is_set():
                    if stats is not None:
                        stats.cancelled_rows += 1
                    r.finish()
                if r.finished:
                    done.append(True)
                    continue
                tok = int(last[i])
                r.tokens.append(tok)
                r.counter[0] += 1
                if r.streamer is not None:
                    r.streamer.put(torch.tensor([tok]))
                stop = tok in eos or len(r.tokens) >= r.params.max_new_tokens
                if not stop:
                    stop = stop_in_tail(tokenizer, r.tokens, r.params.stop)
                if stop:
                    r.finish()
                done.append(stop)
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return _Criteria()


class BatchingGenerator:
    """Wraps an ``HFGenerator``: ``generate`` and ``stream`` calls from many threads are gathered into
    batched generations by one background thread; everything else (``render``, ``count_tokens``,
    adapters, ``tokenizer``, ``context_window``...) is the wrapped generator's own.

    ``max_batch`` caps the rows of one batch; ``window`` is how long (seconds) the first waiting
    request waits for company. ``max_batch=1`` runs requests one at a time through the same path.

    A caller that knows a request is on its way (the server, while it retrieves and builds the
    prompt) wraps that work in ``with batched.expect():``. When the window closes, the batch keeps
    waiting for such announced requests, as long as each comes within ``max_wait`` seconds of the
    one before: concurrent requests whose retrieval took longer than the window, or that prepared
    one after another, still share one batch. The announcement ends when that thread calls
    ``generate``/``stream``, or when the block exits (a request answered without generating, or failed).

    ``max_prep`` (0 = no limit) bounds how many announced requests prepare at once. Preparing a
    prompt (retrieval, chat template, tokenizer) is mostly Python holding the GIL, so parallel
    preparations gain little; each extra one is a thread that the server's event loop (which answers
    429s and health checks) waits behind for the GIL.
    """

    def __init__(self, inner: Any, *, max_batch: int = 8, window: float = 0.015, max_wait: float = 0.25,
                 max_prep: int = 0):
        if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
            raise InputError(f"max_batch must be an integer >= 1, got {max_batch!r}")
        if not isinstance(window, (int, float)) or not (0 <= window <= 3600):
            raise InputError(f"batch window must be between 0 and 3600 seconds, got {window!r}")
        if not isinstance(max_wait, (int, float)) or not (0 <= max_wait <= 3600):
            raise InputError(f"batch max_wait must be between 0 and 3600 seconds, got {max_wait!r}")
        if not isinstance(max_prep, int) or isinstance(max_prep, bool) or max_prep < 0:
            raise InputError(f"max_prep must be an integer >= 0 (0 = no limit), got {max_prep!r}")
        for need in ("_prepare", "_run", "_finish", "_eos_ids", "warm_up_batches"):
            if not hasattr(inner, need):
                raise InputError(f"{type(inner).__name__} cannot be batched in-process (only the transformers "
                                 f"backend, HFGenerator, can)")
        self.inner = inner
        self.max_batch = max_batch
        self.window = float(window)
        self.stats = BatchStats()
        self._pending: list[_Request] = []
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.max_wait = float(max(max_wait, window))
        self._expected = 0  # requests announced by expect() that have not reached generate/stream yet
        self._free_since = 0.0  # when the last batch ended (read and written by the batch thread only)
        self._local = threading.local()
        self.max_prep = max_prep
        self._prep = threading.BoundedSemaphore(max_prep) if max_prep else None
        self.preparing = 0  # announced requests holding a prep slot now (at most max_prep)
        self.most_preparing = 0  # the most that ever held one at once

    def __getattr__(self, name: str) -> Any:
        # only reached for names this class lacks: the wrapped generator answers them
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    # -- the Generator protocol
    def warm_up(self) -> None:
        """Load the model and what its full batches use, before the first batch needs them."""
        self.inner.warm_up_batches(self.max_batch)

    def generate(self, messages: list[Message], *, adapter: str | None = None,
                 params: GenerationParams | None = None, cancel: threading.Event | None = None) -> Generation:
        params = check_params(params)
        self.inner.warm_up()
        ids = self.inner._prepare(messages, adapter, params)
        cancel = cancel or threading.Event()
        req = self._submit(ids, adapter, params, cancel, None, [0])
        new = self._wait(req)
        return self.inner._finish(new, len(ids), params, cancel.is_set())

    def stream(self, messages: list[Message], *, adapter: str | None = None,
               params: GenerationParams | None = None, cancel: threading.Event | None = None) -> GenerationStream:
        """Like ``HFGenerator.stream``; the text comes from this request's row of a batch."""
        from transformers import TextIteratorStreamer

        params = check_params(params)
        self.inner.warm_up()
        ids = self.inner._prepare(messages, adapter, params)
        cancel = cancel or threading.Event()
        # the row's tokens are put one by one, never the prompt: nothing to skip
        streamer = TextIteratorStreamer(self.inner.tokenizer, skip_prompt=False, skip_special_tokens=True)

        counter = [0]
        # queued here, in the caller's thread, so an announced request is never "neither expected nor waiting"
        req = self._submit(ids, adapter, params, cancel, streamer, counter)

        def run(counter: list[int]) -> list[int]:
            return self._wait(req)

        def finish_reason(new: list[int]) -> str:
            return self.inner._finish(new, len(ids), params, cancel.is_set()).finish_reason

        return start_stream(streamer, cancel, params.stop, len(ids), run, finish_reason, counter=counter)

    def generate_batch(self, batch: list[list[Message]], *, adapter: str | None = None,
                       params: GenerationParams | None = None, on_row: Any = None) -> list[Generation]:
        return self.inner.generate_batch(batch, adapter=adapter, params=params, on_row=on_row)

    def close(self) -> None:
        """Stop the batch thread after the batch it runs; waiting requests get an error."""
        with self._cv:
            self._closed = True
            left, self._pending = self._pending, []
            self._cv.notify_all()
        for r in left:
            r.error = InputError("the generator was closed before this request ran")
            r.finish()

    @property
    def waiting(self) -> int:
        """Requests queued for the next batch."""
        with self._cv:
            return len(self._pending)

    # -- queueing
    @contextlib.contextmanager
    def expect(self, cancel: threading.Event | None = None) -> Iterator[None]:
        """Announce that this thread will call generate/stream soon (see the class docstring). With
        ``max_prep``, first wait for a prep slot; a ``cancel`` set meanwhile ends the wait without one
        (the caller checks ``cancel`` and stops)."""
        ticket = [True, False]  # [announced, holds a prep slot]
        with self._cv:
            self._expected += 1
        self._local.ticket = ticket
        try:
            ticket[1] = self._take_prep(cancel)
            yield
        finally:
            with self._cv:
                self._release(ticket)
            if getattr(self._local, "ticket", None) is ticket:
                self._local.ticket = None

    def _take_prep(self, cancel: threading.Event | None) -> bool:
        """Wait for a prep slot (True), or return False at once without a limit or once cancelled."""
        if self._prep is None:
            return False
        while not self._prep.acquire(timeout=_POLL):
            if cancel is not None and cancel.is_set():
                return False
        with self._cv:
            self.preparing += 1
            self.most_preparing = max(self.most_preparing, self.preparing)
        return True

    def _release(self, ticket: list[bool] | None) -> None:
        """Under the lock: the announced request arrived (or will not); once per ticket. Its prep
        slot, if it held one, goes to the next request waiting to prepare."""
        if ticket and ticket[0]:
            ticket[0] = False
            self._expected -= 1
            self._cv.notify_all()
        if ticket and ticket[1]:
            ticket[1] = False
            self.preparing -= 1
            self._prep.release()

    def _submit(self, ids: list[int], adapter: str | None, params: GenerationParams, cancel: threading.Event,
                streamer: Any, counter: list[int]) -> _Request:
        req = _Request(ids, adapter, params, cancel, streamer, counter)
        with self._cv:
            if self._closed:
                raise InputError("the generator is closed")
            self._release(getattr(self._local, "ticket", None))
            self._pending.append(req)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hybrid-batcher", daemon=True)
                self._thread.start()
            self._cv.notify_all()
        return req

    def _wait(self, req: _Request) -> list[int]:
        """The row's new token ids once it finished. A request cancelled while waiting is withdrawn;
        one cancelled mid-batch returns at once with what it has (its row stops at the next step)."""
        while not req.done.wait(_POLL):
            if req.cancel.is_set():
                with self._cv:
                    if req in self._pending:
                        self._pending.remove(req)
                        self.stats.withdrawn += 1
                        req.finish()
                        self._cv.notify_all()
                break
        if req.error is not None:
            raise req.error
        return list(req.tokens)

    def _fits(self, batch: list[_Request], cand: _Request) -> bool:
        """Same adapter and sampling, and the widest prompt plus the longest answer fits the window."""
        if cand.key() != batch[0].key():
            return False
        width = max(len(cand.ids), *(len(r.ids) for r in batch))
        longest = max(cand.params.max_new_tokens, *(r.params.max_new_tokens for r in batch))
        return width + longest <= self.inner.context_window

    def _take(self) -> list[_Request]:
        """Under the lock: the oldest waiting request and the compatible ones after it, up to max_batch."""
        batch = [self._pending[0]]
        for r in self._pending[1:]:
            if len(batch) >= self.max_batch:
                break
            if self._fits(batch, r):
                batch.append(r)
        for r in batch:
            self._pending.remove(r)
        return batch

    def _ready(self) -> int:
        """How many waiting requests would join the oldest one's batch."""
        if not self._pending:
            return 0
        first = self._pending[0]
        return 1 + sum(1 for r in self._pending[1:] if r.key() == first.key())

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                # gather: until the oldest request's window closes or a full batch waits; past the
                # window, only while announced requests are on their way, each within max_wait of the
                # latest arrival (with a prep limit they arrive one after another)
                while self._pending and self._ready() < self.max_batch:
                    # a request that waited through a batch gets its window from the batch's end,
                    # when the clients of that batch's answers may be coming back
                    end = max(self._pending[0].arrived, self._free_since) + self.window
                    if self._expected > 0:
                        end = max(end, max(self._pending[-1].arrived, self._free_since) + self.max_wait)
                    left = end - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(left)
                if not self._pending:
                    continue
                batch = self._take()
            self._run(batch)
            self._free_since = time.monotonic()

    def _run(self, batch: list[_Request]) -> None:
        live = [r for r in batch if not r.cancel.is_set()]
        for r in batch:
            if r not in live:
                with self._cv:
                    self.stats.withdrawn += 1
                r.finish()
        if not live:
            return
        s = self.stats
        s.batches += 1
        s.rows += len(live)
        s.largest = max(s.largest, len(live))
        s.sizes[len(live)] = s.sizes.get(len(live), 0) + 1
        params = dataclasses.replace(live[0].params, stop=[],
                                     max_new_tokens=max(r.params.max_new_tokens for r in live))
        t = time.perf_counter()
        try:
            criteria = row_criteria(live, self.inner.tokenizer, self.inner._eos_ids(), s)
            self.inner._run([r.ids for r in live], live[0].adapter, params, threading.Event(), [0],
                            criteria=criteria)
            # one line per batch (as the pipeline logs one per answer): what a serving run can be checked by
            log.info("batch of %d row(s), prompts up to %d tokens, %d new at most: %.2f s", len(live),
                     max(len(r.ids) for r in live), max(len(r.tokens) for r in live), time.perf_counter() - t)
        except BaseException as e:  # noqa: BLE001 - handed to every row's caller, the thread lives on
            log.error("batched generation of %d row(s) failed: %s: %s", len(live), type(e).__name__, e)
            for r in live:
                if not r.finished:
                    r.error = e
        finally:
            for r in live:
                r.finish()
