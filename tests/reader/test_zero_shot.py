"""Zero-shot sentence selection: the retrieval prior ranks sentences of better-retrieved chunks first
without changing their score, the extract strategy hands it the chunks' dense cosines, and the careful
splitter keeps abbreviations and citation markers inside their sentence."""

from __future__ import annotations

import pytest
import numpy as np

from hybrid.reader import zero_shot
from hybrid.reader.span import split_sentences, split_sentences_careful
from hybrid.reader.zero_shot import ZeroShot, drop_tail_citations, score_sentences, select_span

from tests.reader.test_extract import make_bot

Q = "How long is the lease notice period?"
# the second chunk's sentence holds every question word, the first's misses "lease"
CTX = ["The notice period is 60 days.", "The lease notice period is two months."]


def test_without_priors_the_sentence_with_more_question_words_wins():
    sp = select_span(Q, CTX)
    assert sp.text == CTX[1]


def test_the_retrieval_prior_prefers_the_better_retrieved_chunk():
    far = select_span(Q, CTX, priors=[0.9, 0.3])  # chunk 1 is 0.6 below chunk 0: its key drops by 0.3
    assert far.context_index == 0 and far.text == CTX[0]
    near = select_span(Q, CTX, priors=[0.9, 0.85])  # a small gap does not outweigh the overlap
    assert near.context_index == 1
    off = select_span(Q, CTX, priors=[0.9, 0.3], config=ZeroShot(rank_prior=0.0))
    assert off.context_index == 1


def test_the_prior_changes_the_order_not_the_score():
    own = {(s.context_index, s.start): s.score for s in score_sentences(Q, CTX)}
    ranked = score_sentences(Q, CTX, priors=[0.9, 0.3])
    assert [s.context_index for s in ranked] == [0, 1]
    for s in ranked:
        assert s.score == pytest.approx(own[(s.context_index, s.start)])
    assert ranked[1].raw == pytest.approx(ranked[1].score - zero_shot.RANK_PRIOR * 0.6, abs=1e-6)
    assert ranked[0].raw == pytest.approx(ranked[0].score)


def test_priors_must_match_the_contexts():
    with pytest.raises(ValueError, match="one per context"):
        select_span(Q, CTX, priors=[0.9])


def test_extract_passes_the_chunks_dense_cosines_best_first(tmp_path, monkeypatch):
    import hybrid.strategies.extract as extract_mod

    seen = {}
    real = extract_mod.select_span

    def spy(query, contexts, embedder=None, **kw):
        seen["contexts"], seen["priors"] = list(contexts), kw.get("priors")
        return real(query, contexts, embedder, **kw)

    monkeypatch.setattr(extract_mod, "select_span", spy)
    bot = make_bot(tmp_path)
    ans = bot.ask("How long is the lease notice period?", strategy="extract")
    assert ans.strategy == "extract"
    hits = bot.knowledge_base.search("How long is the lease notice period?", 3)
    dense = {h.chunk.text: h.scores["dense"] for h in hits}
    assert seen["priors"] == pytest.approx([dense[c] for c in seen["contexts"]])
    assert seen["priors"] == sorted(seen["priors"], reverse=True)


def test_careful_splitter_keeps_abbreviations_and_markers_in_their_sentence():
    text = ("Smith et al. found it in bats (Fig. 2) [12]. The dose was 3.5 mg, e.g. in adults. "
            "2.1. Methods were standard.\nNew line here.")
    got = [text[s:e] for s, e in split_sentences_careful(text)]
    assert got == ["Smith et al. found it in bats (Fig. 2) [12].", "The dose was 3.5 mg, e.g. in adults.",
                   "2.1. Methods were standard.", "New line here."]
    plain = [text[s:e] for s, e in split_sentences(text)]
    assert "Smith et al." in plain  # what the plain splitter does
    sp = select_span("Where was it found?", [text], config=ZeroShot(splitter="careful", tail_citations=True))
    assert sp.text == got[0] and text[sp.start:sp.end] == sp.text
    # by default the quote leaves out the reference marker that closes the sentence, and stays a slice
    sp = select_span("Where was it found?", [text], config=ZeroShot(splitter="careful"))
    assert sp.text == "Smith et al. found it in bats (Fig. 2)" and text[sp.start:sp.end] == sp.text


@pytest.mark.parametrize("sentence, quoted", [
    ("The virus was found in bats [29, 30].", "The virus was found in bats"),
    ("The virus was found in bats [3-5]. [7]", "The virus was found in bats"),
    ("The virus was found in bats [3\u20135];", "The virus was found in bats"),
    ("See [3] for the bats.", "See [3] for the bats."),          # a marker inside the sentence stays
    ("The virus was found in bats (2019).", "The virus was found in bats (2019)."),  # not a marker
])
def test_quote_leaves_out_closing_reference_markers(sentence, quoted):
    text = "Masks were worn. " + sentence
    sp = select_span("Where was the virus found in bats?", [text])
    assert sp.text == quoted and text[sp.start:sp.end] == sp.text


def test_a_sentence_of_markers_only_is_not_cut_to_nothing():
    assert drop_tail_citations("[12].", 0, 5) == 5
    assert drop_tail_citations("x [12].", 2, 7) == 7  # the span starts at the marker


def test_sentence_vectors_embed_each_text_once_and_stay_bounded():
    from hybrid.reader.zero_shot import SentenceVectors
    from indexes.embed import HashEmbedder

    calls: list[list[str]] = []

    class Counting(HashEmbedder):
        def embed(self, texts, **kw):
            calls.append(list(texts))
            return super().embed(texts, **kw)

    inner = Counting(64)
    cached = SentenceVectors(inner, size=3)
    first = cached.embed(["a b", "c d", "a b"])
    assert calls == [["a b", "c d"]]  # a repeated text is embedded once
    assert np.allclose(first, HashEmbedder(64).embed(["a b", "c d", "a b"]))
    again = cached.embed(["c d", "a b"])
    assert calls == [["a b", "c d"]] and np.allclose(again, first[[1, 0]])  # served from the cache
    cached.embed(["e f", "g h"])  # 4 texts seen, room for 3: the least recently used ("c d") goes
    assert list(cached._vecs) == ["a b", "e f", "g h"]
    cached.embed(["c d"])
    assert calls[-1] == ["c d"]


def test_extract_reuses_sentence_vectors_across_questions(tmp_path):
    from tests.reader.test_extract import make_bot

    bot = make_bot(tmp_path)
    first = bot.ask("How long is the lease notice period?", strategy="extract")
    seen = len(bot.sentence_embedder._vecs)
    assert seen > 0
    second = bot.ask("How long is the lease notice period?", strategy="extract")
    assert second.text == first.text and len(bot.sentence_embedder._vecs) == seen
