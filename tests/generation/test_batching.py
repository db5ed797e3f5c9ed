"""``BatchingGenerator``: concurrent generate/stream calls gathered into batched generations.

The window and the batch cap are checked through the batcher's counters (``stats``), never through
timing: a huge window means "a batch starts only when full", so the sizes it records are exact.
Mechanics run on the tiny random Llama (fp32, milliseconds); answer equality runs on the real model.
"""

from __future__ import annotations

import threading

import pytest
import torch

from tests.waiting import wait_until

from core.errors import InputError
from hybrid.generation import make_params
from hybrid.generation.batching import BatchingGenerator

BIG_WINDOW = 600.0  # "never closes" within a test: a batch then starts only when it is full
PROMPTS = ["hello world", "The X1 blender costs", "Returns are accepted", "What is the capital of France?"]


def user(q: str) -> list[dict]:
    return [{"role": "user", "content": q}]


def in_threads(fn, args: list) -> list:
    """Run ``fn(arg)`` for each arg on its own thread at once; results in order, errors re-raised."""
    out: list = [None] * len(args)
    errors: list = []

    def one(i: int) -> None:
        try:
            out[i] = fn(args[i])
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a request hung"
    if errors:
        raise errors[0]
    return out


class CancelAfter(threading.Event):
    """A cancel event that turns itself on when the batch thread has looked at it ``n`` times (about
    once per generated token): a mid-batch cancellation that does not depend on timing."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.seen = n, 0

    def is_set(self) -> bool:
        if threading.current_thread().name == "hybrid-batcher" and not super().is_set():
            self.seen += 1
            if self.seen > self.n:
                self.set()
        return super().is_set()


def test_a_full_batch_starts_without_waiting_for_the_window(tiny_gen):
    p = make_params(max_new_tokens=8)
    b = BatchingGenerator(tiny_gen, max_batch=4, window=BIG_WINDOW)
    out = in_threads(lambda q: b.generate(user(q), params=p), PROMPTS)
    assert b.stats.sizes == {4: 1} and b.stats.rows == 4
    # fp32 on the tiny model: batched rows equal the eval runner's left-padded batch exactly
    assert [g.text for g in out] == [g.text for g in tiny_gen.generate_batch([user(q) for q in PROMPTS], params=p)]


def test_max_batch_caps_every_batch(tiny_gen):
    p = make_params(max_new_tokens=6)
    b = BatchingGenerator(tiny_gen, max_batch=2, window=BIG_WINDOW)
    out = in_threads(lambda q: b.generate(user(q), params=p), PROMPTS)
    assert b.stats.sizes == {2: 2} and b.stats.largest == 2 and b.stats.batches == 2
    assert all(g.completion_tokens > 0 for g in out)


def test_the_window_closes_for_a_lone_request(tiny_gen):
    # max_batch 8 is never reached: only the window ending lets this request run at all
    b = BatchingGenerator(tiny_gen, max_batch=8, window=0.05)
    g = in_threads(lambda q: b.generate(user(q), params=make_params(max_new_tokens=5)), ["hello world"])[0]
    assert g.completion_tokens > 0
    assert b.stats.sizes == {1: 1}


def test_requests_with_other_sampling_or_adapter_ride_separate_batches(tiny_gen):
    greedy, sampled = make_params(max_new_tokens=5), make_params(max_new_tokens=5, temperature=0.8, seed=3)
    b = BatchingGenerator(tiny_gen, max_batch=4, window=0.2)
    in_threads(lambda a: b.generate(user(a[0]), params=a[1]),
               [("hello world", greedy), ("The X1 blender costs", sampled)])
    assert b.stats.sizes == {1: 2}


def test_per_row_max_new_tokens_and_stop_strings(tiny_gen):
    free = tiny_gen.generate(user(PROMPTS[1]), params=make_params(max_new_tokens=12))
    assert free.completion_tokens >= 4, "the tiny model must say a few tokens for this test"
    stop = free.text[2:4]
    b = BatchingGenerator(tiny_gen, max_batch=3, window=BIG_WINDOW)
    short, long_, stopped = in_threads(lambda a: b.generate(user(a[0]), params=a[1]), [
        (PROMPTS[0], make_params(max_new_tokens=3)),
        (PROMPTS[2], make_params(max_new_tokens=12)),
        (PROMPTS[1], make_params(max_new_tokens=12, stop=[stop])),
    ])
    assert b.stats.sizes == {3: 1}
    assert short.completion_tokens <= 3
    assert long_.text == tiny_gen.generate(user(PROMPTS[2]), params=make_params(max_new_tokens=12)).text
    assert stop not in stopped.text and free.text.startswith(stopped.text) and stopped.finish_reason == "stop"


def test_each_row_streams_its_own_text(tiny_gen):
    p = make_params(max_new_tokens=10)
    b = BatchingGenerator(tiny_gen, max_batch=3, window=BIG_WINDOW)
    streams = [b.stream(user(q), params=p) for q in PROMPTS[:3]]
    texts = in_threads(lambda s: "".join(s), streams)
    assert b.stats.sizes == {3: 1}
    solo = [tiny_gen.generate(user(q), params=p).text for q in PROMPTS[:3]]
    assert [t.strip() for t in texts] == solo
    assert [s.generation.text for s in streams] == solo


def test_a_row_cancelled_mid_batch_stops_and_the_others_finish(tiny_gen):
    p = make_params(max_new_tokens=16)
    solo = [tiny_gen.generate(user(q), params=p) for q in PROMPTS[:3]]
    assert solo[0].completion_tokens > 3, "the first prompt must run past the cancel point"
    b = BatchingGenerator(tiny_gen, max_batch=3, window=BIG_WINDOW)
    cancel = CancelAfter(3)
    streams = [b.stream(user(PROMPTS[0]), params=p, cancel=cancel),
               b.stream(user(PROMPTS[1]), params=p), b.stream(user(PROMPTS[2]), params=p)]
    texts = in_threads(lambda s: "".join(s), streams)
    assert b.stats.sizes == {3: 1} and b.stats.cancelled_rows == 1
    a = streams[0].generation
    assert 0 < a.completion_tokens < solo[0].completion_tokens and a.finish_reason == "cancelled"
    assert solo[0].text.startswith(texts[0].strip())
    assert [t.strip() for t in texts[1:]] == [g.text for g in solo[1:]]  # the batch went on for them


def test_closing_a_stream_returns_and_the_batch_serves_the_rest(tiny_gen):
    p = make_params(max_new_tokens=12)
    b = BatchingGenerator(tiny_gen, max_batch=2, window=0.2)  # kept may be left alone: the window must close
    gone, kept = b.stream(user(PROMPTS[0]), params=p), b.stream(user(PROMPTS[1]), params=p)
    gone.close()  # before or during its batch: either way it returns and the other row is served
    assert not gone.running and gone.generation.finish_reason == "cancelled"
    assert "".join(kept).strip() == tiny_gen.generate(user(PROMPTS[1]), params=p).text


def test_a_cancelled_waiting_request_is_withdrawn(tiny_gen):
    b = BatchingGenerator(tiny_gen, max_batch=4, window=BIG_WINDOW)
    cancel = threading.Event()
    s = b.stream(user("hello world"), params=make_params(max_new_tokens=5), cancel=cancel)
    cancel.set()  # the window never closes and the batch is never full: only withdrawal ends it
    assert list(s) == [] and s.generation.finish_reason == "cancelled"
    assert b.stats.withdrawn == 1 and b.stats.batches == 0


def test_a_failing_batch_reaches_every_caller_and_the_batcher_lives_on(tiny_gen, monkeypatch):
    b = BatchingGenerator(tiny_gen, max_batch=2, window=BIG_WINDOW)
    real_run = tiny_gen._run
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("out of memory (simulated)")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(tiny_gen, "_run", broken)
    p = make_params(max_new_tokens=4)
    with pytest.raises(RuntimeError, match="simulated"):
        in_threads(lambda q: b.generate(user(q), params=p), PROMPTS[:2])
    assert b.stats.batches == 1
    out = in_threads(lambda q: b.generate(user(q), params=p), PROMPTS[:2])
    assert all(g.completion_tokens > 0 for g in out) and b.stats.batches == 2


def test_bad_settings_and_backends_are_one_line_errors(tiny_gen):
    from hybrid.generation import ScriptedGenerator

    with pytest.raises(InputError, match="max_batch must be an integer >= 1"):
        BatchingGenerator(tiny_gen, max_batch=0)
    with pytest.raises(InputError, match="batch window must be between 0 and 3600 seconds"):
        BatchingGenerator(tiny_gen, window=-1)
    with pytest.raises(InputError, match="cannot be batched in-process"):
        BatchingGenerator(ScriptedGenerator())
    with pytest.raises(InputError, match=r"max_prep must be an integer >= 0 \(0 = no limit\)"):
        BatchingGenerator(tiny_gen, max_prep=-1)


def test_everything_else_is_the_wrapped_generator(tiny_gen):
    b = BatchingGenerator(tiny_gen)
    assert b.tokenizer is tiny_gen.tokenizer and b.context_window == tiny_gen.context_window
    assert b.render(user("hi")) == tiny_gen.render(user("hi"))
    assert b.count_tokens(user("hi")) == tiny_gen.count_tokens(user("hi"))
    assert b.has_adapter("nope") is False


@pytest.mark.slow
def test_real_model_batched_greedy_answers_match_unbatched(real_gen):
    """Greedy answers of the real model: batched (left-padded, three prompt lengths) vs one by one.

    Padding changes the order of float sums in attention and matmuls, so two nearly tied logits can
    swap and the texts diverge from there on. A batching bug (wrong row, mask or positions) breaks
    an answer from its first tokens, so the check is: identical first 8 tokens (or the whole answer
    when shorter). Both sides run in fp32 (no bf16 autocast), which is the comparison that isolates
    batching itself.
    """
    real_gen._bf16 = False  # a per-test copy (see conftest.real_gen): the session model is untouched
    qs = ["What is the capital of France?",
          "Name three primary colours.",
          "Explain in one sentence why the sky looks blue during a clear day."]
    p = make_params(max_new_tokens=20)
    solo = [real_gen.generate(user(q), params=p) for q in qs]
    b = BatchingGenerator(real_gen, max_batch=3, window=BIG_WINDOW)
    batched = in_threads(lambda q: b.generate(user(q), params=p), qs)
    assert b.stats.sizes == {3: 1}
    tok = real_gen.tokenizer
    for s, g in zip(solo, batched):
        a, c = tok.encode(s.text, add_special_tokens=False), tok.encode(g.text, add_special_tokens=False)
        n = min(8, len(a))
        assert n > 0 and a[:n] == c[:n], (s.text, g.text)


def test_bf16_prefill_batches_run_through_an_adapter(tiny_gen, tiny_model_dir, tmp_path):
    """Batches on bf16 CPUs prefill under autocast and decode in fp32 (hybrid.generation.cpu.bf16_prefill);
    the cache hand-over must also work through peft, with the adapter on or off."""
    from tests.generation.conftest import make_lora

    tiny_gen.load_adapter("a", make_lora(tiny_model_dir, tmp_path / "a", seed=1, base_sha=tiny_gen.sha,
                                         base_id=tiny_gen.model_id, tokenizer=tiny_gen.tokenizer))
    tiny_gen._bf16 = True  # a per-test generator (conftest.tiny_gen); with an adapter: the split path
    tiny_gen.row_prefill = False  # the padded split, as for sliding-window models (row prefill: test_prefill)
    p = make_params(max_new_tokens=8)
    base = tiny_gen.generate_batch([user(q) for q in PROMPTS[:3]], params=p)
    tuned = tiny_gen.generate_batch([user(q) for q in PROMPTS[:3]], adapter="a", params=p)
    assert all(g.completion_tokens > 0 for g in base + tuned)
    assert [g.text for g in tuned] != [g.text for g in base]


def test_warm_up_makes_the_bf16_batch_weights_before_the_first_batch(tiny_gen, tiny_model_dir, tmp_path):
    """A batched server warms its generator up at load: the bf16 weight copy its batches run on is
    made then, not by the first batch (a whole-model copy that held the GIL while 429s waited)."""
    from tests.generation.conftest import make_lora

    tiny_gen._bf16 = True  # as on a CPU with native bf16 (a per-test generator)
    b = BatchingGenerator(tiny_gen, max_batch=4, window=0.01)
    try:
        assert tiny_gen._bf16_copy is None
        b.warm_up()
        copy = tiny_gen._bf16_copy
        assert copy is not None and next(copy.parameters()).dtype == torch.bfloat16
        b.generate_batch([user(q) for q in PROMPTS[:2]], params=make_params(max_new_tokens=4))
        assert tiny_gen._bf16_copy is copy  # the batch used the copy made at warm-up
        # with an adapter loaded, batches run the fp32 model with a bf16 prefill: no copy is made
        tiny_gen._bf16_copy = None
        tiny_gen.load_adapter("a", make_lora(tiny_model_dir, tmp_path / "a", seed=1, base_sha=tiny_gen.sha,
                                             base_id=tiny_gen.model_id, tokenizer=tiny_gen.tokenizer))
        b.warm_up()
        assert tiny_gen._bf16_copy is None
    finally:
        b.close()


@pytest.mark.slow
@pytest.mark.parametrize("weights", [True, False], ids=["bf16-weights", "bf16-prefill-fp32-decode"])
def test_real_model_bf16_batch_paths_agree_with_fp32(real_gen, weights):
    """The batch paths on bf16 CPUs against the fp32 model: a bf16 weight copy (no adapter loaded),
    or a bf16 prefill with fp32 decoding (the path with adapters). bf16 rounding flips near ties:
    after "The primary colours are:" fp32 gives '\\n' 0.221 and ' Red' 0.208, and a bf16 batch may take
    either, so equal texts would test rounding, not batching. Instead every one of the first 8 tokens
    of each batched answer must be among fp32's 3 likeliest after that answer's own prefix. A
    batching bug (wrong row, mask or positions) writes tokens that fp32 does not expect there."""
    import torch

    qs = ["What is the capital of France?", "Name three primary colours."]
    p = make_params(max_new_tokens=16)
    real_gen._bf16, real_gen.bf16_weights, real_gen._bf16_copy = True, weights, None  # per-test copy
    batch = real_gen.generate_batch([user(q) for q in qs], params=p)
    assert (real_gen._bf16_copy is not None) == weights
    tok = real_gen.tokenizer
    for q, g in zip(qs, batch):
        ids = real_gen._prepare(user(q), None, p)
        new = tok.encode(g.text, add_special_tokens=False)[:8]
        assert new, g.text
        with torch.inference_mode():
            logits = real_gen.model(input_ids=torch.tensor([ids + new])).logits[0]
        for i, t in enumerate(new):
            top = logits[len(ids) + i - 1].topk(3).indices.tolist()
            assert t in top, (q, g.text, i, tok.decode(new[:i + 1]))


def _wait_for(cond, what: str) -> None:
    wait_until(cond, what, timeout=120)


def test_an_announced_request_joins_the_batch_after_the_window(tiny_gen):
    """window=0 alone would run the first request at once; a request announced with expect()
    (the server retrieving for it) holds the batch open until it arrives."""
    p = make_params(max_new_tokens=5)
    b = BatchingGenerator(tiny_gen, max_batch=4, window=0.0, max_wait=BIG_WINDOW)
    announced, go, out = threading.Event(), threading.Event(), {}

    def slow_request() -> None:
        with b.expect():
            announced.set()
            go.wait(120)  # "retrieval" still running
            out["late"] = b.generate(user(PROMPTS[1]), params=p)

    t = threading.Thread(target=slow_request)
    t.start()
    announced.wait(120)
    first = threading.Thread(target=lambda: out.setdefault("first", b.generate(user(PROMPTS[0]), params=p)))
    first.start()
    _wait_for(lambda: b.waiting == 1, "the first request to queue")
    go.set()
    t.join(300)
    first.join(300)
    assert b.stats.sizes == {2: 1} and out["first"].completion_tokens > 0 and out["late"].completion_tokens > 0


def test_an_announcement_that_never_generates_lets_the_batch_go(tiny_gen):
    b = BatchingGenerator(tiny_gen, max_batch=4, window=0.0, max_wait=BIG_WINDOW)
    announced, leave = threading.Event(), threading.Event()

    def answered_without_generating() -> None:
        with b.expect():
            announced.set()
            leave.wait(120)

    t = threading.Thread(target=answered_without_generating)
    t.start()
    announced.wait(120)
    out = {}
    first = threading.Thread(target=lambda: out.setdefault("g", b.generate(user(PROMPTS[0]),
                                                                           params=make_params(max_new_tokens=4))))
    first.start()
    _wait_for(lambda: b.waiting == 1, "the request to queue")
    assert b.stats.batches == 0  # held for the announced request ...
    leave.set()  # ... which ends without generating: the batch goes alone
    t.join(120)
    first.join(300)
    assert b.stats.sizes == {1: 1} and out["g"].completion_tokens > 0


def test_the_prep_limit_lets_one_announced_request_prepare_at_a_time(tiny_gen):
    """max_prep=1: three announced requests prepare one after another, though each would wait inside
    its preparation until all three are announced (without the limit they would overlap), and the
    three still share one batch."""
    p = make_params(max_new_tokens=4)
    b = BatchingGenerator(tiny_gen, max_batch=3, window=BIG_WINDOW, max_wait=BIG_WINDOW, max_prep=1)
    lock, inside, most = threading.Lock(), [0], [0]

    def request(q: str):
        with b.expect():
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            _wait_for(lambda: b._expected + b.waiting + b.stats.rows >= 3, "all three to be announced")
            with lock:
                inside[0] -= 1
            return b.generate(user(q), params=p)

    out = in_threads(request, PROMPTS[:3])
    assert most[0] == 1 and b.most_preparing == 1 and b.preparing == 0
    assert b.stats.sizes == {3: 1} and all(g.completion_tokens > 0 for g in out)


def test_a_request_cancelled_while_waiting_to_prepare_gives_up_without_a_slot(tiny_gen):
    b = BatchingGenerator(tiny_gen, max_batch=2, window=0.0, max_wait=BIG_WINDOW, max_prep=1)
    holding, leave = threading.Event(), threading.Event()

    def first() -> None:
        with b.expect():
            holding.set()
            leave.wait(120)

    t = threading.Thread(target=first)
    t.start()
    holding.wait(120)
    cancel = threading.Event()
    cancel.set()
    with b.expect(cancel):  # returns although the one slot is taken: the caller sees cancel and stops
        assert b.preparing == 1 and b._expected == 2
    assert b._expected == 1  # its announcement ended with the block
    leave.set()
    t.join(120)
    assert b.preparing == 0 and b._expected == 0 and b.stats.batches == 0


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_thread_setting_is_a_one_line_error(tiny_model_dir, monkeypatch, value):
    from hybrid.generation import HFGenerator

    monkeypatch.setenv("HYBRID_TORCH_THREADS", value)
    with pytest.raises(InputError, match="HYBRID_TORCH_THREADS must be a positive integer"):
        HFGenerator(str(tiny_model_dir))
    monkeypatch.delenv("HYBRID_TORCH_THREADS")
    with pytest.raises(InputError, match="threads must be a positive integer"):
        HFGenerator(str(tiny_model_dir), threads=0)


def test_threads_apply_in_the_generating_thread(tiny_model_dir, monkeypatch):
    import torch

    from hybrid.generation import HFGenerator

    monkeypatch.setenv("HYBRID_TORCH_THREADS", "1")
    gen = HFGenerator(str(tiny_model_dir), bf16=False)
    assert gen.threads == 1
    seen = {}

    def in_thread() -> None:
        torch.set_num_threads(2)  # whatever this thread had, generating sets the configured count
        gen.generate(user("hello world"), params=make_params(max_new_tokens=2))
        seen["threads"] = torch.get_num_threads()  # torch's setting is per thread: read it in this one

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(120)
    assert seen["threads"] == 1


def test_a_loaded_generator_counts_tokens_while_a_generation_holds_its_lock(tiny_model_dir):
    # render and count_tokens call warm_up; a running batch holds the generator's lock for its whole
    # generation, so an answer still preparing its prompt used to wait for the batch to end
    import threading

    from hybrid.generation import HFGenerator

    gen = HFGenerator(str(tiny_model_dir), bf16=False)
    gen.warm_up()
    counted: list[int] = []
    with gen._lock:  # what generate() holds while it decodes
        t = threading.Thread(target=lambda: counted.append(gen.count_tokens([{"role": "user", "content": "hi"}])),
                             daemon=True)
        t.start()
        t.join(timeout=60)
        assert not t.is_alive(), "count_tokens waited on the lock a running generation holds"
    assert counted and counted[0] > 0


def test_a_request_that_waited_through_a_batch_waits_for_that_batchs_clients(tiny_gen, monkeypatch):
    """Closed-loop clients: A (a row that stopped early) queues while the batch runs, long past its
    own window; B (whose answer that batch was finishing) is announced and comes back right after
    it ends. A's window counts from the batch's end, so A and B share the next batch instead of A
    running alone (which split 8 serving clients into batches of 2 and 6)."""
    import time

    p = make_params(max_new_tokens=4)
    b = BatchingGenerator(tiny_gen, max_batch=2, window=0.0, max_wait=1.0)
    release, started, real_run = threading.Event(), threading.Event(), tiny_gen._run

    def first_batch_waits(*a, **kw):
        if not started.is_set():
            started.set()
            release.wait(120)  # the first batch "runs" until the test lets it end
        return real_run(*a, **kw)

    monkeypatch.setattr(tiny_gen, "_run", first_batch_waits)
    out, announced, back = {}, threading.Event(), threading.Event()

    def client_b() -> None:
        with b.expect():
            announced.set()
            back.wait(120)  # its previous answer is still in the running batch
            out["b"] = b.generate(user(PROMPTS[2]), params=p)

    first = threading.Thread(target=lambda: out.setdefault("first", b.generate(user(PROMPTS[0]), params=p)))
    first.start()
    started.wait(120)
    a = threading.Thread(target=lambda: out.setdefault("a", b.generate(user(PROMPTS[1]), params=p)))
    a.start()
    tb = threading.Thread(target=client_b)
    tb.start()
    announced.wait(120)
    _wait_for(lambda: b.waiting == 1, "A to queue behind the running batch")
    time.sleep(1.2)  # longer than max_wait: A's own window and wait are over before the batch ends
    release.set()
    first.join(300)
    back.set()
    for t in (a, tb):
        t.join(300)
    assert b.stats.sizes == {1: 1, 2: 1}, b.stats.sizes
    assert all(out[k].completion_tokens > 0 for k in ("first", "a", "b"))
