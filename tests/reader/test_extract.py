"""The extract strategy: the answer is a span quoted from the cited chunk (zero-shot or with a reader),
plus ``[n]``; below the threshold the app says it does not know in its own voice."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybrid.app import load_app
from hybrid.generation import ScriptedGenerator
from hybrid.pipeline import Assistant
from hybrid.reader.zero_shot import select_span, split_sentences
from indexes.embed import HashEmbedder

from tests.core.fakes import MemoryRetriever

DONT_KNOW = "Sorry, my sources do not say."
APP = f"""\
name: readerapp
system_prompt: "You are {{app_name}}."
knowledge_base:
  embedder: hash:256
rag:
  k: 3
  min_score: 0.05
generation:
  model: scripted
voice:
  dont_know: "{DONT_KNOW}"
"""
DOCS = [
    ("Pets are allowed with written consent. The lease notice period is 60 days for residential tenants. "
     "Rent rises at most once a year.", {"source": "lease.md", "page": 2}),
    ("Security deposits must be returned within 14 days after the tenancy ends. Interest is not owed.",
     {"source": "deposit.md"}),
    ("Warranty claims on appliances are handled within 30 days.", {"source": "warranty.md"}),
]


def make_bot(tmp_path: Path, extra: str = "", docs=DOCS) -> Assistant:
    root = tmp_path / "app"
    root.mkdir(exist_ok=True)
    (root / "app.yaml").write_text(APP + extra)
    emb = HashEmbedder(256)
    return Assistant(load_app(root), generator=ScriptedGenerator(context_window=4096), embedder=emb,
                     knowledge_base=MemoryRetriever(list(docs), emb), date="2026-01-02")


def _span_in_cited_chunk(bot, ans):
    assert ans.strategy == "extract" and len(ans.citations) == 1
    assert ans.text.endswith(" [1]")
    span = ans.text[: -len(" [1]")]
    chunk = next(c for c in bot.knowledge_base.chunks if c.id == ans.citations[0].chunk_id)
    assert span and span in chunk.text
    assert span in ans.citations[0].snippet
    return span, chunk


def test_split_sentences_keeps_offsets():
    text = "  First one. Second, with 3.5 percent!\nThird line"
    spans = split_sentences(text)
    assert [text[s:e] for s, e in spans] == ["First one.", "Second, with 3.5 percent!", "Third line"]


def test_zero_shot_picks_the_sentence_with_the_question_words():
    ctx = [DOCS[0][0], DOCS[1][0]]
    sp = select_span("How long is the lease notice period?", ctx, HashEmbedder(256))
    assert sp.context_index == 0 and ctx[0][sp.start:sp.end] == sp.text
    assert sp.text == "The lease notice period is 60 days for residential tenants."
    assert 0.0 <= sp.score <= 1.0


def test_extract_zero_shot_quotes_the_cited_chunk(tmp_path):
    bot = make_bot(tmp_path)
    ans = bot.ask("Within how many days must security deposits be returned?", strategy="extract")
    span, chunk = _span_in_cited_chunk(bot, ans)
    assert "14 days" in span and chunk.metadata["source"] == "deposit.md"
    assert ans.usage == {"prompt_tokens": 0, "completion_tokens": 0}  # no generation
    assert bot.generator.calls == []
    assert ans.confidence is not None and 0.0 <= ans.confidence <= 1.0


def test_extract_abstains_in_the_apps_voice_below_the_threshold(tmp_path):
    bot = make_bot(tmp_path, "reader:\n  threshold: 0.99\n")
    ans = bot.ask("Within how many days must security deposits be returned?", strategy="extract")
    assert ans.text == DONT_KNOW and ans.citations == []
    assert any("threshold 0.99" in n for n in ans.notices)


def test_extract_with_nothing_relevant_says_dont_know(tmp_path):
    bot = make_bot(tmp_path)
    bot.app.rag.min_score = 0.99  # nothing reaches it
    ans = bot.ask("Completely unrelated zebra question?", strategy="extract")
    assert ans.text == DONT_KNOW


def test_extract_with_a_reader_quotes_the_cited_chunk(tmp_path, monkeypatch):
    from hybrid.reader.model import Reader

    reader = Reader(max_length=64, stride=16)  # untuned head on the bundled MiniLM: any span, but a real one
    bot = make_bot(tmp_path, "reader:\n  threshold: 0.0\n  max_answer_tokens: 8\n")
    monkeypatch.setattr(Assistant, "reader", property(lambda self: reader))
    ans = bot.ask("How long is the lease notice period?", strategy="extract")
    span, _ = _span_in_cited_chunk(bot, ans)
    assert len(reader.tokenizer(span, add_special_tokens=False)["input_ids"]) <= 8
    assert any("untuned reader" in n for n in ans.notices)


def test_extract_is_excluded_only_without_a_knowledge_base(tmp_path):
    bot = make_bot(tmp_path)
    assert "extract" not in bot.excluded()  # no reader needed: zero-shot works
    root = tmp_path / "app"
    nokb = Assistant(load_app(root), generator=ScriptedGenerator(), embedder=HashEmbedder(256))
    nokb.app.knowledge_base.build_on_first_use = False
    assert "extract" in nokb.excluded()


def test_citation_markers_do_not_cost_token_f1():
    from hybrid.eval.metrics import exact_match, token_f1

    assert token_f1("within 14 days [1]", ["within 14 days"]) == 1.0
    assert exact_match("within 14 days [1]", ["within 14 days"]) == 1.0


def test_reader_cache_shares_one_instance(tmp_path):
    from hybrid.reader import model as m

    m.clear_cache()
    a = m.Reader.__new__(m.Reader)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(m.Reader, "warm_up", lambda self: self)
        r1, r2 = m.load_reader(tmp_path), m.load_reader(str(tmp_path) + "/")
        assert r1 is r2 and r1 is not a
    m.clear_cache()


def test_sentence_bounds_widen_a_span_to_whole_sentences():
    from hybrid.reader.span import sentence_bounds

    text = "Rent is due on the 1st. Late fees apply. Pets are banned."
    s, e = sentence_bounds(text, text.index("the 1st"), text.index("the 1st") + 7)
    assert text[s:e] == "Rent is due on the 1st."
    # a span over a sentence break takes both sentences, and nothing else
    s, e = sentence_bounds(text, text.index("1st"), text.index("fees") + 4)
    assert text[s:e] == "Rent is due on the 1st. Late fees apply."
    assert sentence_bounds(text, 5, 5) == (5, 5)  # an empty span is left alone


@pytest.mark.parametrize("quote, whole", [("sentence", True), ("span", False)])
def test_extract_quotes_the_readers_sentence_when_asked(tmp_path, monkeypatch, quote, whole):
    from hybrid.reader.model import Reader
    from hybrid.reader.span import Span

    class PartReader(Reader):
        """Always points at "60 days" in the lease chunk."""

        def predict(self, question, contexts, max_answer_tokens=30):
            out = []
            for i, c in enumerate(contexts):
                if "60 days" in c:
                    s = c.index("60 days")
                    out.append(Span("60 days", i, s, s + 7, 0.9, raw=2.0, null=0.0))
            return out

    reader = PartReader()
    reader.card = {"trained": True, "quote": "span"}  # the card's choice; the app setting overrides it
    bot = make_bot(tmp_path, f"reader:\n  threshold: 0.0\n  quote: {quote}\n")
    monkeypatch.setattr(Assistant, "reader", property(lambda self: reader))
    ans = bot.ask("How long is the lease notice period?", strategy="extract")
    span, _ = _span_in_cited_chunk(bot, ans)
    expected = "The lease notice period is 60 days for residential tenants." if whole else "60 days"
    assert span == expected
    assert any("quoting the span's sentence" in n for n in ans.notices) == whole


def test_extract_follows_the_cards_quote_by_default(tmp_path, monkeypatch):
    from hybrid.reader.model import Reader

    reader = Reader(max_length=64, stride=16)
    reader.warm_up()
    reader.card = {"trained": True, "quote": "sentence"}
    bot = make_bot(tmp_path, "reader:\n  threshold: 0.0\n  max_answer_tokens: 4\n")
    monkeypatch.setattr(Assistant, "reader", property(lambda self: reader))
    ans = bot.ask("How long is the lease notice period?", strategy="extract")
    span, chunk = _span_in_cited_chunk(bot, ans)
    # whatever the untuned head points at, the quote starts and ends on sentence bounds of the chunk
    from hybrid.reader.span import split_sentences

    bounds = split_sentences(chunk.text)
    pos = chunk.text.index(span)
    assert pos in {s for s, _ in bounds} and pos + len(span) in {e for _, e in bounds}
    assert any("quoting the span's sentence" in n for n in ans.notices)


def test_a_bad_quote_setting_is_one_clear_error(tmp_path):
    from core.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="quote must be auto, span or sentence"):
        make_bot(tmp_path, "reader:\n  quote: clause\n")


def _record_searches(bot, monkeypatch) -> list[int]:
    seen: list[int] = []
    kb = bot.knowledge_base
    search = kb.search

    def spy(query, k=5, **kw):
        seen.append(k)
        return search(query, k, **kw)

    monkeypatch.setattr(kb, "search", spy)
    return seen


def _many_docs(n: int = 20):
    return [(f"Clause {i} covers topic number {i} of the lease in plain words.", {"source": f"c{i}.md"})
            for i in range(n)] + list(DOCS)


def test_zero_shot_extract_reads_deeper_than_rag(tmp_path, monkeypatch):
    from hybrid.strategies.extract import ZERO_SHOT_K

    bot = make_bot(tmp_path, docs=_many_docs())  # rag.k is 3
    seen = _record_searches(bot, monkeypatch)
    ans = bot.ask("How long is the lease notice period?")  # routed: rag's k for the signals, then extract's
    assert seen == [3, ZERO_SHOT_K]
    if ans.strategy == "extract":
        _span_in_cited_chunk(bot, ans)
    seen.clear()
    bot.ask("How long is the lease notice period?", strategy="extract")
    assert seen == [ZERO_SHOT_K]


def test_reader_k_sets_how_deep_extract_reads_and_a_tiny_kb_caps_it(tmp_path, monkeypatch):
    bot = make_bot(tmp_path, "reader:\n  k: 5\n", docs=_many_docs())
    seen = _record_searches(bot, monkeypatch)
    _span_in_cited_chunk(bot, bot.ask("How long is the lease notice period?", strategy="extract"))
    assert seen == [5]
    (tmp_path / "small").mkdir()
    small = make_bot(tmp_path / "small")  # 3 chunks: extract cannot ask for 12
    seen = _record_searches(small, monkeypatch)
    _span_in_cited_chunk(small, small.ask("How long is the lease notice period?", strategy="extract"))
    assert seen == [3]


def test_a_tuned_reader_reads_what_rag_reads(tmp_path, monkeypatch):
    from hybrid.reader.model import Reader

    reader = Reader(max_length=64, stride=16)
    bot = make_bot(tmp_path, "reader:\n  threshold: 0.0\n", docs=_many_docs())
    monkeypatch.setattr(Assistant, "reader", property(lambda self: reader))
    seen = _record_searches(bot, monkeypatch)
    _span_in_cited_chunk(bot, bot.ask("How long is the lease notice period?", strategy="extract"))
    assert seen == [3]


def test_a_deeper_search_leaves_rags_hits_alone():
    from hybrid.strategies.base import StrategyContext

    emb = HashEmbedder(256)
    ctx = StrategyContext(system_prompt="", generator=ScriptedGenerator(), params=None, budget=100,
                          retriever=MemoryRetriever(_many_docs(), emb), retrieval_query="lease notice", k=3)
    top = ctx.retrieve()
    deep = ctx.retrieve(8)
    assert len(top) == 3 and len(deep) == 8 and ctx.hits == top
    assert [h.chunk.id for h in deep[:3]] == [h.chunk.id for h in top]
    assert ctx.retrieve(5) == deep[:5]  # served from the deeper search, not searched again
    assert ctx.retrieve(2) == top[:2]


def test_a_bad_reader_k_is_one_clear_error(tmp_path):
    from core.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="k must be >= 1"):
        make_bot(tmp_path, "reader:\n  k: 0\n")
