"""The eval runner's progress bar advances per question, from inside a batch, and ``--threads``."""

from __future__ import annotations

import pytest

from hybrid.app import load_app
from hybrid.eval.runner import EvalConfig, run_eval
from hybrid.pipeline import Assistant
from indexes.embed import HashEmbedder
from tests.core.conftest import DOCS, MemoryRetriever, write_app
from tests.eval.test_runner import QUESTIONS, qfile, reply


class RowReporting:
    """The scripted generator with ``generate_batch(on_row=...)``, reporting rows as HFGenerator does:
    each as it finishes, before the batch returns (here in reverse order, as rows finish at any step)."""

    def __init__(self, inner, events: list[str]):
        self.inner, self.events = inner, events

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate_batch(self, batch, *, adapter=None, params=None, on_row=None):
        out = self.inner.generate_batch(batch, adapter=adapter, params=params)
        for i in reversed(range(len(batch))):
            self.events.append(f"row {i}")
            on_row(i)
        self.events.append("batch returned")
        return out


class Bar:
    """Stands in for tqdm: records its settings and every update in the shared event list."""

    made: list["Bar"] = []

    def __init__(self, *, total, events, **kw):
        self.total, self.kw, self.events, self.n = total, kw, events, 0
        Bar.made.append(self)

    def update(self, n=1):
        self.n += n
        self.events.append("update")

    def close(self):
        pass


def test_the_bar_moves_per_question_while_the_batch_runs(tmp_path, monkeypatch):
    import tqdm

    from hybrid.generation import ScriptedGenerator

    events: list[str] = []
    Bar.made.clear()
    monkeypatch.setattr(tqdm, "tqdm", lambda *a, **kw: Bar(events=events, **kw))
    emb = HashEmbedder(256)
    gen = RowReporting(ScriptedGenerator(reply, context_window=4096), events)
    bot = Assistant(load_app(write_app(tmp_path / "app")), generator=gen, embedder=emb,
                    knowledge_base=MemoryRetriever(list(DOCS), emb), date="2026-01-02")
    rows = [q for q in QUESTIONS if q.get("answer")]
    run_eval(None, qfile(tmp_path, rows), tmp_path / "out",
             EvalConfig(strategies=["few_shot"], batch_size=len(rows), learned_cv=False), assistant=bot)
    bar = Bar.made[0]
    assert bar.total == len(rows) and bar.n == len(rows)  # every question once, never twice
    assert bar.kw["smoothing"] == 0  # the rate is averaged over the run, not over the last burst
    # each row's update comes right after the row finished, all before the batch returned
    first = events.index("batch returned")
    assert events[:first] == [e for i in reversed(range(len(rows))) for e in (f"row {i}", "update")]


def test_without_on_row_the_bar_still_counts_every_question_once(tmp_path, monkeypatch):
    import tqdm

    from tests.core.conftest import make_assistant

    events: list[str] = []
    Bar.made.clear()
    monkeypatch.setattr(tqdm, "tqdm", lambda *a, **kw: Bar(events=events, **kw))
    bot = make_assistant(write_app(tmp_path / "app"), HashEmbedder(256), replies=reply)
    cfg = EvalConfig(strategies=["rag"], batch_size=2, learned_cv=False)
    run_eval(None, qfile(tmp_path), tmp_path / "out", cfg, assistant=bot)
    assert Bar.made[0].n == len(QUESTIONS) == events.count("update")


def test_threads_reach_torch_and_the_generator(tmp_path, monkeypatch):
    import torch

    from tests.core.conftest import make_assistant

    bot = make_assistant(write_app(tmp_path / "app"), HashEmbedder(256), replies=reply)
    bot.generator.threads = None  # the scripted fake carries the attribute like HFGenerator does
    before = torch.get_num_threads()
    try:
        run_eval(None, qfile(tmp_path), tmp_path / "out", EvalConfig(strategies=["few_shot"], threads=1,
                                                                    learned_cv=False),
                 assistant=bot, progress=False)
        assert torch.get_num_threads() == 1 and bot.generator.threads == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        EvalConfig(threads=bad)


def test_hybrid_eval_threads_flag_is_checked(tmp_path):
    from click.testing import CliRunner

    from hybrid.cli.eval import cli

    app = write_app(tmp_path / "app")
    q = qfile(tmp_path)
    res = CliRunner().invoke(cli, ["--app", str(app), "--questions", str(q), "--threads", "0"])
    assert res.exit_code != 0 and "threads must be a positive integer, got 0" in res.output
