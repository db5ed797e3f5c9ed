from core.types import Document
from indexes.chunking import chunk_documents
from indexes.config import IndexConfig
from indexes.embed import HashEmbedder

LONG = " ".join(f"Sentence {i} is about clause {i} of the agreement." for i in range(60))
MD = """# Lease

Intro paragraph about the lease.

## Termination

Either party may end the lease with three months notice. Notice must be written.

## Rent

Rent is due monthly.
"""


def test_chunks_fit_the_token_budget_and_overlap():
    emb = HashEmbedder()
    cfg = IndexConfig(embedder="hash", chunk_size=30, chunk_overlap=8)
    doc = Document.create(LONG, {"source": "a.txt", "page": 2})
    chunks = chunk_documents([doc], cfg, emb)
    assert len(chunks) > 5
    assert all(emb.count_tokens(c.text) <= 30 for c in chunks)
    # neighbours share text (the overlap), and together the chunks cover every sentence
    assert set(chunks[0].text.split()[-3:]) & set(chunks[1].text.split())
    for i in range(60):
        assert any(f"clause {i} " in c.text + " " for c in chunks), i


def test_chunks_keep_metadata_position_and_stable_ids():
    cfg = IndexConfig(embedder="hash", chunk_size=30, chunk_overlap=0)
    doc = Document.create(LONG, {"source": "a.txt", "page": 2})
    a = chunk_documents([doc], cfg, HashEmbedder())
    b = chunk_documents([doc], cfg, HashEmbedder())
    assert [c.id for c in a] == [c.id for c in b]
    assert len({c.id for c in a}) == len(a)
    for i, c in enumerate(a):
        assert c.doc_id == doc.id
        assert c.metadata["source"] == "a.txt" and c.metadata["page"] == 2
        assert c.metadata["chunk_index"] == i and c.metadata["chunk_count"] == len(a)
        assert LONG[c.metadata["start"]:].startswith(c.text[:20])


def test_editing_one_part_keeps_the_other_chunk_ids():
    cfg = IndexConfig(embedder="hash", chunk_size=30, chunk_overlap=0)
    doc = Document("fixed-id", LONG, {"source": "a.txt"})
    edited = Document("fixed-id", LONG.replace("clause 55 ", "clause fifty-five "), {"source": "a.txt"})
    a = [c.id for c in chunk_documents([doc], cfg, HashEmbedder())]
    b = [c.id for c in chunk_documents([edited], cfg, HashEmbedder())]
    assert a[0] == b[0] and a != b  # early chunks keep their ids, the edited one gets a new id


def test_headings_mode_keeps_section_titles():
    cfg = IndexConfig(embedder="hash", chunk_size=40, chunk_overlap=0, chunk_mode="headings")
    chunks = chunk_documents([Document.create(MD, {"source": "lease.md"})], cfg, HashEmbedder())
    term = [c for c in chunks if "three months" in c.text]
    assert term and term[0].metadata["section"] == "Lease > Termination"
    assert term[0].text.startswith("Termination\n")
    assert any(c.metadata.get("section") == "Lease > Rent" for c in chunks)


def test_headings_mode_handles_html_and_falls_back_on_plain_text():
    cfg = IndexConfig(embedder="hash", chunk_size=40, chunk_overlap=0, chunk_mode="headings")
    html = "<html><body><h1>Policy</h1><p>Intro.</p><h2>Retention</h2><p>Data is kept five years.</p></body></html>"
    chunks = chunk_documents([Document.create(html, {"source": "p.html", "mime": "text/html"})], cfg, HashEmbedder())
    ret = [c for c in chunks if "five years" in c.text]
    assert ret and ret[0].metadata["section"] == "Policy > Retention"
    plain = chunk_documents([Document.create(LONG, {"source": "a.txt"})], cfg, HashEmbedder())
    assert plain and all("section" not in c.metadata for c in plain)


def test_empty_document_gives_no_chunks():
    assert chunk_documents([Document.create("   \n ", {"source": "e.txt"})], IndexConfig(embedder="hash"), HashEmbedder()) == []


def test_only_long_documents_with_a_real_tokenizer():
    """Every document too long to count in one batch (COVID-QA's papers): the batch is empty, not an error."""
    from transformers import AutoTokenizer

    from indexes.embed import bundled_minilm_path

    tok = AutoTokenizer.from_pretrained(str(bundled_minilm_path()), local_files_only=True)
    cfg = IndexConfig(chunk_size=50, chunk_overlap=0)
    long_text = " ".join(f"Sentence {i} is about coronavirus spike proteins." for i in range(200))
    chunks = chunk_documents([Document(id="p1", text=long_text)], cfg, tok)
    assert len(chunks) > 10 and all(len(tok(c.text, add_special_tokens=False)["input_ids"]) <= 50 for c in chunks)
