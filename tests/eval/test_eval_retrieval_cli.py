"""``hybrid eval retrieval`` opens or creates its knowledge base through ``KnowledgeBase.open_or_create``:
an existing KB opens with its stored settings (here the hash embedder), a missing one is created."""

from __future__ import annotations

import json

from click.testing import CliRunner

from indexes.config import IndexConfig
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase


def write_beir(root):
    (root / "qrels").mkdir(parents=True)
    docs = {"d1": "The landlord must give sixty days notice.", "d2": "Rent is due on the first of the month.",
            **{f"x{i}": f"Filler document number {i} about parking, pets and repairs." for i in range(8)}}
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                               for k, v in docs.items()))
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "When is rent due?"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    return root


def test_retrieval_opens_an_existing_kb_through_open_or_create(tmp_path, monkeypatch):
    from hybrid.cli import cli

    ds = write_beir(tmp_path / "ds")
    KnowledgeBase.create(tmp_path / "kb", IndexConfig(embedder="hash", chunk_size=64, chunk_overlap=8),
                         embedder=HashEmbedder()).close()
    calls = []
    real = KnowledgeBase.open_or_create.__func__

    def spy(cls, path, *a, **kw):
        calls.append(path)
        return real(cls, path, *a, **kw)

    monkeypatch.setattr(KnowledgeBase, "open_or_create", classmethod(spy))
    r = CliRunner().invoke(cli, ["eval", "retrieval", "--kb", str(tmp_path / "kb"), "--dataset", str(ds),
                                 "--modes", "bm25", "-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    assert calls and str(calls[0]) == str(tmp_path / "kb")
    out = json.loads(r.output[r.output.index("{"):])
    assert out["queries"] == 1 and "bm25" in out["scores"]
