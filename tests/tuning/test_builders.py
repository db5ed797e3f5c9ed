"""RAFT-style, style-set and plain-text builders, from documents without any index."""

from __future__ import annotations

import re

from hybrid.tuning.builders import build_raft, build_style_set, build_text_set, derive_question, load_chunks
from hybrid.tuning.data import rows_from_records
from hybrid.tuning.sample import catalogue_documents


def test_raft_rows_hold_oracle_and_distractors_and_cite_the_oracle():
    chunks = load_chunks(catalogue_documents(20))
    rows = build_raft(chunks, n_distractors=3, oracle_fraction=0.8, seed=1)
    assert len(rows) == 20
    with_oracle = [r for r in rows if r["oracle"]]
    assert 10 <= len(with_oracle) < 20  # some rows keep only distractors, as in RAFT
    by_id = {c.doc_id: c for c in chunks}
    for r in rows:
        user, answer = r["messages"][0]["content"], r["messages"][1]["content"]
        sources = re.findall(r"^\[(\d+)\] source: (\S+)$", user, re.M)
        oracle = by_id[r["source"]]
        names = [s for _, s in sources]
        assert (oracle.source in names) == r["oracle"]
        assert len(names) == (4 if r["oracle"] else 3) and len(set(names)) == len(names)
        sentence = re.sub(r" \[\d+\]$", "", answer)
        assert sentence in re.sub(r"\s+", " ", oracle.text)  # the answer is quoted from the oracle
        if r["oracle"]:
            n = int(re.search(r"\[(\d+)\]$", answer).group(1))
            assert sources[n - 1][1] == oracle.source  # and cites the right block
        assert "Question: " in user
    # the rows are valid training data
    parsed, report = rows_from_records(rows)
    assert len(parsed) == 20 and report.n_skipped == 0


def test_raft_is_deterministic():
    chunks = load_chunks(catalogue_documents(10))
    assert build_raft(chunks, seed=3) == build_raft(chunks, seed=3)
    assert build_raft(chunks, seed=3) != build_raft(chunks, seed=4)


def test_questions_come_from_templates_over_the_chunk():
    (chunk,) = load_chunks([{"id": "d", "text": "# Returns\n\nItems can be returned within 30 days of delivery. "
                                                  "Shipping is free."}])
    q, a = derive_question(chunk)
    assert chunk.title == "Returns" and "Returns" in q
    assert a == "Items can be returned within 30 days of delivery."


def test_style_and_text_sets(tmp_path):
    docs = tmp_path / "docs.jsonl"
    import json

    docs.write_text("\n".join(json.dumps(d) for d in catalogue_documents(5)) + "\n")
    chunks = load_chunks(docs)
    style = build_style_set(chunks, min_words=20)
    assert len(style) == 5
    for row, ch in zip(style, chunks):
        head = row["messages"][0]["content"].split(":\n\n", 1)[1]
        assert head + " " + row["messages"][1]["content"] == re.sub(r"\n\n(?=The)", " ", ch.text) or \
            ch.text.startswith(head)
        assert ch.text.endswith(row["messages"][1]["content"])
    text = build_text_set(chunks)
    assert [t["source"] for t in text] == [c.doc_id for c in chunks]


def test_builders_accept_a_knowledge_base_like_object():
    class KB:
        def documents(self):
            from core.types import Document

            return [Document.create(d["text"], d["metadata"]) for d in catalogue_documents(4)]

    chunks = load_chunks(KB())
    assert len(chunks) == 4 and all(c.title for c in chunks)
