"""extract: answer with a span quoted from a retrieved chunk, with no generation at all.

The tuned reader of the app (``reader.path``, trained with ``hybrid tune reader``) picks the span when
there is one; otherwise the zero-shot sentence selector does (embedder cosine + word overlap). The
answer is the span as written in the source followed by its citation, ``"<span> [n]"``, so token F1
against gold spans is not lost to paraphrase. Below the threshold (the reader card's, or the app's
``reader.threshold``) the app says it does not know, in its own voice. The score is ``Answer.confidence``.
"""

from __future__ import annotations

from hybrid.reader.span import widen_to_sentence
from hybrid.reader.zero_shot import select_span
from hybrid.strategies import STRATEGIES, guard
from hybrid.strategies.base import Prompt, StrategyContext, relevance, run_prompt
from hybrid.strategies.rag import _where
from core.types import Answer, Citation

ZERO_SHOT_THRESHOLD = 0.2  # zero-shot score (half cosine, half overlap) below which nothing answers
# chunks zero-shot selection reads (app reader.k overrides): more candidates cost no generation, and the
# retrieval prior keeps weak chunks from winning. Chosen on the COVID-QA and PolicyQA dev parts
# (docs/reader.md): from rag.k's 6 to 12, +0.011 on COVID-QA, +0.000 on PolicyQA.
ZERO_SHOT_K = 12
SNIPPET = 240  # characters of the chunk shown around the span in the citation


def _snippet(text: str, start: int, end: int) -> str:
    """The span with some context around it (the span itself is always inside)."""
    pad = max(0, (SNIPPET - (end - start)) // 2)
    s, e = max(0, start - pad), min(len(text), end + pad)
    return text[s:e].strip()


@STRATEGIES.register("extract")
class Extract:
    """Quote the best span from the retrieved sources and cite it.

    >>> Extract().answer("When is rent due?", ctx).text  # doctest: +SKIP
    'on the first day of each month [1]'
    """

    name = "extract"
    cost = 0.2  # an encoder pass over a few chunks: the cheapest strategy
    uses_kb = True  # quotes from the retrieved sources: excluded without a usable KB, grounded
    uses_reader = True  # the app's reader picks the span (a retrained reader re-answers)
    generates = False  # the answer is the quoted span, the model is never called
    # keys cached eval answers: 2 since zero-shot selection ranks with the retrieval prior (b4e2812);
    # 3 since it reads ZERO_SHOT_K chunks and leaves out the sentence's closing reference markers
    method = 3

    @staticmethod
    def depth(reader, rag_k: int) -> int:
        """Chunks extract reads when ``reader.k`` is unset: what rag reads with a tuned reader,
        ``ZERO_SHOT_K`` for zero-shot selection."""
        return rag_k if reader is not None else ZERO_SHOT_K

    def build(self, query: str, ctx: StrategyContext) -> Prompt:
        # the pipeline sets reader_k (reader.k, capped by the KB's size); a bare context uses the default
        hits = ctx.retrieve(ctx.reader_k if ctx.reader_k is not None else self.depth(ctx.reader, ctx.k))
        relevant = sorted((h for h in hits if relevance(h) >= ctx.min_score), key=relevance, reverse=True)
        if not relevant:
            best = max((relevance(h) for h in hits), default=None)
            why = ("the knowledge base returned nothing" if best is None
                   else f"best relevance {best:.2f} < min_score {ctx.min_score:.2f}")
            return Prompt(messages=[], direct=ctx.dont_know, hits=hits, notices=[f"no relevant sources: {why}"])
        contexts = [h.chunk.text for h in relevant]
        reader = ctx.reader
        if reader is not None:
            span = reader.best(query, contexts, max_answer_tokens=ctx.max_answer_tokens)
            threshold = ctx.reader_threshold if ctx.reader_threshold is not None else reader.threshold
            how = "tuned reader" if reader.tuned else "untuned reader"
            quote = reader.quote if ctx.reader_quote == "auto" else ctx.reader_quote
            if span is not None and quote == "sentence":
                span = widen_to_sentence(span, contexts)
                how += " (quoting the span's sentence)"
        else:
            # the chunks' dense cosine to the query ranks their sentences too (not a fused or BM25 score,
            # whose scale differs from query to query)
            dense = [h.scores.get("dense") for h in relevant]
            priors = None if any(d is None for d in dense) else [float(d) for d in dense]
            span = select_span(query, contexts, ctx.embedder, query_vec=ctx.query_vec, priors=priors)
            threshold = ctx.reader_threshold if ctx.reader_threshold is not None else ZERO_SHOT_THRESHOLD
            how = "zero-shot sentence selection"
        if span is None or not span.text.strip():
            return Prompt(messages=[], direct=ctx.dont_know, hits=hits, notices=[f"{how}: no span in the sources"],
                          confidence=0.0)
        score = round(float(span.score), 4)
        if span.score < threshold:
            return Prompt(messages=[], direct=ctx.dont_know, confidence=score, hits=hits,
                          notices=[f"{how}: best span score {span.score:.2f} < threshold {threshold:.2f}"])
        if guard.find_injections(span.text):  # a quoted instruction is still an instruction: never repeat it
            return Prompt(messages=[], direct=ctx.refuse, confidence=score, hits=hits,
                          notices=[f"{how}: the best span repeats instructions found in retrieved data"])
        hit = relevant[span.context_index]
        src, page = _where(hit)
        cite = Citation(n=1, chunk_id=hit.chunk.id, source=src, page=page,
                        snippet=_snippet(hit.chunk.text, span.start, span.end), score=relevance(hit))
        return Prompt(messages=[], direct=f"{span.text.strip()} [1]", citations=[cite], confidence=score, hits=hits,
                      notices=[f"{how}: span {span.start}-{span.end} of source [1], score {span.score:.2f}"])

    def answer(self, query: str, ctx: StrategyContext) -> Answer:
        return run_prompt(self.name, self.build(query, ctx), ctx)
