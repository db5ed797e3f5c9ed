"""Streaming text out of a generating thread: stop-string scanning, cancellation, error hand-over.

    stream = start_stream(streamer, cancel, params.stop, prompt_tokens, run, finish_reason)
    for piece in stream:        # text as it is generated, stop strings cut off
        ...
    stream.generation           # Generation(...) once done

``run(counter)`` generates on a daemon thread, feeding ``streamer`` (an iterator of text pieces with an
``end()`` method, such as transformers' ``TextIteratorStreamer``) and counting tokens in ``counter[0]``;
an exception it raises is re-raised in the consumer's thread. ``_StopScanner`` is shared with the
scripted fake, which streams without a thread.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from core.errors import InputError, ModelError
from hybrid.generation.params import cut_at_stop
from core.protocols import Generation

__all__ = ["GenerationStream", "start_stream"]


class _StopScanner:
    """Streams text while holding back any tail that could be the start of a stop string."""

    def __init__(self, stop: Sequence[str]):
        self.stop = list(stop)
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.buf = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buf += piece
        text, hit = cut_at_stop(self.buf, self.stop)
        if hit:
            self.stopped = True
            self.buf = ""
            return text
        if not self.stop:
            out, self.buf = self.buf, ""
            return out
        # only hold back a tail that is really a prefix of some stop string
        keep = 0
        for k in range(min(self.hold, len(self.buf)), 0, -1):
            tail = self.buf[-k:]
            if any(s.startswith(tail) for s in self.stop):
                keep = k
                break
        out = self.buf[: len(self.buf) - keep]
        self.buf = self.buf[len(self.buf) - keep:]
        return out

    def flush(self) -> str:
        out, self.buf = ("" if self.stopped else self.buf), ""
        return out


class _StreamState:
    """What the generating thread shares with its stream. The thread holds only this, never the
    stream itself, so a stream the consumer drops is collected and its ``__del__`` cancels."""

    def __init__(self) -> None:
        self.counter = [0]  # tokens generated, counted by the stopping criteria
        self.finish = "length"
        self.error: BaseException | None = None


class GenerationStream:
    """Iterator over generated text pieces; ``close()``, leaving a ``with`` block, or simply dropping
    the iterator (``break`` out of a ``for`` loop) cancels generation, which stops within one token.

        with gen.stream(messages) as s:
            for piece in s:
                ...
        s.generation   # Generation(text, prompt_tokens, completion_tokens, finish_reason) once done
    """

    def __init__(self, streamer: Any, cancel: threading.Event, stop: Sequence[str], prompt_tokens: int,
                 state: _StreamState, thread: threading.Thread):
        self._streamer = streamer
        self._cancel = cancel
        self._scanner = _StopScanner(stop)
        self._state = state
        self._thread = thread
        self._done = False
        self._text: list[str] = []
        self.prompt_tokens = prompt_tokens

    def __iter__(self) -> "GenerationStream":
        return self

    def __next__(self) -> str:
        while not self._done:
            try:
                piece = next(self._streamer)
            except StopIteration:
                self._end()
                tail = self._scanner.flush()
                if tail:
                    self._text.append(tail)
                    return tail
                break
            out = self._scanner.feed(piece)
            if self._scanner.stopped:
                self._state.finish = "stop"
                self._cancel.set()  # the stop string is in: no need to generate further
                self._end()
            if out:
                self._text.append(out)
                return out
        raise StopIteration

    def _end(self) -> None:
        self._done = True
        self._thread.join()
        err, self._state.error = self._state.error, None
        if err is not None:
            if isinstance(err, (InputError, ModelError)):
                raise err
            raise ModelError(f"generation failed: {type(err).__name__}: {err}") from err

    def cancel(self) -> None:
        """Ask the generating thread to stop at the next token; returns immediately."""
        self._cancel.set()

    def close(self) -> None:
        """Cancel and wait for the generating thread to finish (within one token)."""
        if self._state.finish == "length" and not self._done:
            self._state.finish = "cancelled"
        self._cancel.set()
        self._done = True
        self._thread.join()

    def __enter__(self) -> "GenerationStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:  # an abandoned stream must not keep the CPU busy
        try:
            self._cancel.set()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def generation(self) -> Generation:
        return Generation("".join(self._text).strip(), prompt_tokens=self.prompt_tokens,
                          completion_tokens=self._state.counter[0], finish_reason=self._state.finish)


def start_stream(streamer: Any, cancel: threading.Event, stop: Sequence[str], prompt_tokens: int,
                 run: Callable[[list[int]], Any], finish_reason: Callable[[Any], str],
                 counter: list[int] | None = None) -> GenerationStream:
    """Start ``run(counter)`` on a daemon thread and return the ``GenerationStream`` reading ``streamer``.

    Unless the stream already ended on a stop string, the finish reason is ``finish_reason(result)``
    of what ``run`` returned. If ``run`` raises, ``streamer.end()`` unblocks the consumer, who gets
    the error. The thread holds the shared ``_StreamState``, never the stream. ``counter`` is the
    token counter to share when someone else counts (a batch counts each row in its own list).
    """
    state = _StreamState()
    if counter is not None:
        state.counter = counter

    def work() -> None:
        try:
            result = run(state.counter)
            if state.finish != "stop":
                state.finish = finish_reason(result)
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer's thread
            state.error = e
            streamer.end()  # unblock the consumer

    thread = threading.Thread(target=work, name="hybrid-generate", daemon=True)
    thread.start()
    return GenerationStream(streamer, cancel, stop, prompt_tokens, state, thread)
