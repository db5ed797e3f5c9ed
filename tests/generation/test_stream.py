"""``start_stream`` without a model: a fake streamer fed by a plain function on the generating thread."""

from __future__ import annotations

import queue
import threading

import pytest

from core.errors import InputError, ModelError
from hybrid.generation.stream import GenerationStream, start_stream


class Pieces:
    """The part of transformers' ``TextIteratorStreamer`` a stream reads: ``put``, ``end``, iteration."""

    def __init__(self) -> None:
        self.q: queue.Queue = queue.Queue()

    def put(self, text: str) -> None:
        self.q.put(text)

    def end(self) -> None:
        self.q.put(None)

    def __iter__(self) -> "Pieces":
        return self

    def __next__(self) -> str:
        piece = self.q.get(timeout=10)
        if piece is None:
            raise StopIteration
        return piece


def feeding(streamer: Pieces, pieces: list[str]):
    def run(counter: list[int]) -> list[str]:
        for p in pieces:
            counter[0] += 1
            streamer.put(p)
        streamer.end()
        return pieces

    return run


def test_pieces_arrive_and_the_finish_reason_comes_from_the_result():
    streamer = Pieces()
    s = start_stream(streamer, threading.Event(), [], 7, feeding(streamer, ["Hello ", "wor", "ld"]),
                     lambda result: "length" if len(result) == 3 else "stop")
    assert isinstance(s, GenerationStream)
    assert "".join(s) == "Hello world"
    g = s.generation
    assert (g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason) == ("Hello world", 7, 3, "length")
    assert not s.running


def test_a_stop_string_ends_the_stream_and_cancels():
    streamer, cancel = Pieces(), threading.Event()
    s = start_stream(streamer, cancel, ["\n\n"], 1, feeding(streamer, ["Paris", ".\n", "\nMore"]),
                     lambda result: "length")
    assert list(s) == ["Paris", "."]
    assert s.generation.finish_reason == "stop" and s.generation.text == "Paris." and cancel.is_set()


@pytest.mark.parametrize("error, expected", [
    (RuntimeError("kaboom"), "generation failed: RuntimeError: kaboom"),
    (InputError("too long"), "too long"),
])
def test_an_error_on_the_thread_reaches_the_consumer(error, expected):
    def run(counter):
        raise error

    s = start_stream(Pieces(), threading.Event(), [], 1, run, lambda result: "stop")
    with pytest.raises(type(error) if isinstance(error, InputError) else ModelError, match=expected):
        list(s)
    assert not s.running
