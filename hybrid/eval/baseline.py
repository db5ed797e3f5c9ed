"""The anchor users would otherwise build: a plain LangChain RAG chain over the same contexts.

FAISS (``langchain_community``), the same embedder through ``langchain_huggingface``, k=3,
character splitting as LangChain's tutorials do, a standard prompt, and the same generator with the
settings a ten-line chain would use: the model's plain defaults (greedy, no repetition penalty) and
the run's ``max_new_tokens``. It never inherits the app's sampling settings, so a bad default of
ours cannot drag the anchor down with us. Scored exactly like the strategies, as strategy ``langchain``.

Needs the ``bench`` extra (``pip install -e .[bench]``); never a runtime dependency of hybrid.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from core.errors import HybridError

NAME = "langchain"
# A standard RAG instruction, in our words: answer from the context, admit when it is not there.
PROMPT_SYSTEM = ("You answer questions using the context provided. If the context does not contain "
                 "the answer, say that you don't know. Keep the answer short.")
PROMPT_HUMAN = "Context:\n{context}\n\nQuestion: {question}"


def _import():
    try:
        from langchain_community.vectorstores import FAISS
        from langchain_core.documents import Document as LCDocument
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_core.runnables import RunnableLambda, RunnablePassthrough
        from langchain_huggingface import HuggingFaceEmbeddings
        from langchain_text_splitters import RecursiveCharacterTextSplitter
    except ImportError as e:
        raise HybridError(f"--baseline langchain needs the bench extra (pip install -e '.[bench]'): {e}") from None
    return FAISS, LCDocument, ChatPromptTemplate, RunnableLambda, RunnablePassthrough, HuggingFaceEmbeddings, \
        RecursiveCharacterTextSplitter


def build_chain(documents: list, *, k: int = 3):
    """``chain_for(filter=None)``: the prompt-building chain over ``documents`` (hybrid Documents).

    A question scoped to a document (its ``filter``, e.g. ``{"source": "policy.txt"}``) gets the
    retriever a LangChain user would write for it, ``as_retriever(search_kwargs={"k": k, "filter": ...})``,
    with ``fetch_k`` raised to the whole index so the filter is exact: the anchor searches exactly the
    documents our strategies search."""
    FAISS, LCDocument, ChatPromptTemplate, RunnableLambda, RunnablePassthrough, HuggingFaceEmbeddings, Splitter = _import()
    from indexes.embed import bundled_minilm_path

    lc_docs = [LCDocument(page_content=d.text, metadata={"source": d.metadata.get("source", ""), "doc_id": d.id})
               for d in documents]
    splits = Splitter(chunk_size=1000, chunk_overlap=200).split_documents(lc_docs)
    emb = HuggingFaceEmbeddings(model_name=str(bundled_minilm_path()), encode_kwargs={"normalize_embeddings": True})
    store = FAISS.from_documents(splits, emb)
    prompt = ChatPromptTemplate.from_messages([("system", PROMPT_SYSTEM), ("human", PROMPT_HUMAN)])

    def fmt(docs):
        return "\n\n".join(d.page_content for d in docs)

    def chain_for(filter: dict | None = None):
        # LangChain's FAISS filters *after* fetching ``fetch_k`` (default 20) nearest chunks, so with many
        # documents a scoped question often got no context at all; fetching every chunk makes the filter
        # exact, as our own knowledge base's filter is
        scoped = {"filter": filter, "fetch_k": store.index.ntotal} if filter else {}
        retriever = store.as_retriever(search_kwargs={"k": k, **scoped})
        return {"context": retriever | RunnableLambda(fmt), "question": RunnablePassthrough(),
                "docs": retriever} | RunnableLambda(lambda x: {"prompt": prompt.invoke(x), "docs": x["docs"]})

    return chain_for


def anchor_params(max_new_tokens: int):
    """What a user's plain chain generates with: greedy, no repetition penalty, same length cap."""
    from core.protocols import GenerationParams

    return GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0, repetition_penalty=1.0)


def _messages(prompt_value) -> list[dict[str, str]]:
    roles = {"system": "system", "human": "user", "ai": "assistant"}
    return [{"role": roles.get(m.type, "user"), "content": str(m.content)} for m in prompt_value.to_messages()]


def langchain_rag_baseline(questions: list, *, bot, cache, out, progress: bool = True) -> list[dict[str, Any]]:
    """Answer ``questions`` with the LangChain chain; rows in the runner's format (cached too)."""
    from hybrid.eval.cache import AnswerCache
    from hybrid.eval.runner import _base_row, _score

    kb = bot.knowledge_base
    if kb is None or not hasattr(kb, "documents"):
        raise HybridError("the LangChain baseline needs the app's knowledge base documents")
    gen = bot.generator
    params = anchor_params(bot.app.generation.max_new_tokens)
    docs = kb.documents()
    version = f"{len(docs)}:{sum(len(d.text) for d in docs)}"
    from hybrid.eval.runner import shared_texts

    shared = shared_texts(questions)
    rows, todo = [], []
    for q in questions:
        key = AnswerCache.key(question=q.question, strategy=NAME, model=f"{gen.model_id}@{getattr(gen, 'sha', '')}",
                              adapter=None, kb_version=version,
                              params={**dataclasses.asdict(params),
                                      **({"filter": q.filter, "fetch": "all"} if q.filter else {}),
                                      **({"question_id": q.id} if q.id in shared else {})})
        hit = cache.get(key)
        if hit is not None:
            rows.append(hit)
        else:
            todo.append((q, key))
    if not todo:
        return rows
    t = time.perf_counter()
    chain_for = build_chain(docs)
    built: list = [None] * len(todo)
    by_filter: dict[str, list[int]] = {}
    for i, (q, _) in enumerate(todo):
        by_filter.setdefault(json.dumps(q.filter or {}, sort_keys=True), []).append(i)
    for f, idx in by_filter.items():
        for i, b in zip(idx, chain_for(json.loads(f) or None).batch([todo[i][0].question for i in idx])):
            built[i] = b
    prep_s = (time.perf_counter() - t) / len(todo)
    t = time.perf_counter()
    outs = gen.generate_batch([_messages(b["prompt"]) for b in built], params=params)
    gen_s = (time.perf_counter() - t) / len(todo)
    for (q, key), b, g in zip(todo, built, outs):
        row = _base_row(q, NAME)
        scores, flags = _score(q, g.text, [d.page_content for d in b["docs"]])
        row.update(answer=g.text.strip(), error=None, routed_to=None, decision=None, citations=[],
                   latency_s=prep_s + gen_s, prompt_tokens=g.prompt_tokens, completion_tokens=g.completion_tokens,
                   scores=scores, flags=row["flags"] + flags, notices=[])
        cache.put(key, row, question_id=q.id, strategy=NAME)
        rows.append(row)
    return rows
