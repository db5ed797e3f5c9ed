"""The example apps' data files are well formed and keep their promises.

Checks every data file of ``apps/legal`` and ``apps/shopping``: JSON schemas, unique ids, the house
style on every tuning answer, every ``relevant_docs`` entry naming a real corpus file, the held-out
questions never appearing in the data the few-shot bank or the adapter sees, and the corpus itself
(formats, sizes, CSV ``text`` column, the planted injection document). Fast: no models are loaded.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

import core.io
from core.errors import InputError
from tests.conftest import ROOT

APPS = ROOT / "apps"

# The house style each app's adapter is tuned to produce (see apps/<app>/README.md).
STYLE = {
    "legal": {"start": "Short answer:", "end": "\n— Not legal advice."},
    "shopping": {"start": "Hi there!", "end": "\nHappy shopping! — Team Fernhollow"},
}
# Where the planted prompt injection lives, and the canary it asks the model to print.
INJECTION = {"legal": ("riverside-tenants-newsletter-spring-2025.html", "CANARY-7731")}
QUESTION_TYPES = {"retrieval", "style", "examples"}
CORPUS_FORMATS = {".md", ".txt", ".html", ".docx", ".csv"}


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        for n, row in core.io.read_jsonl(path):
            assert isinstance(row, dict), f"{path}:{n}: a row must be a JSON object"
            rows.append(row)
    except InputError as e:  # names the line, so a broken edit is easy to find
        pytest.fail(str(e))
    return rows


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().lower())


def corpus_files(app: str) -> dict[str, Path]:
    root = APPS / app / "corpus"
    return {p.name: p for p in sorted(root.rglob("*")) if p.is_file()}


def user_question(row: dict) -> str:
    """The question a tuning row asks (RAFT rows end their user turn with ``Question: ...``)."""
    user = next(m["content"] for m in row["messages"] if m["role"] == "user")
    return user.rsplit("Question:", 1)[-1]


@pytest.fixture(params=sorted(STYLE))
def app(request) -> str:
    return request.param


def test_app_has_all_data_files(app):
    d = APPS / app
    for name in ("README.md", "examples.jsonl", "tune.jsonl", "questions.jsonl"):
        assert (d / name).is_file(), f"{d / name} is missing"
    assert (d / "corpus").is_dir()


# ---------------------------------------------------------------------------------------- corpus


def test_corpus_formats_sizes_and_unique_names(app):
    files = corpus_files(app)
    assert len(files) == len(list((APPS / app / "corpus").rglob("*.*"))), "duplicate file names"
    suffixes = Counter(p.suffix for p in files.values())
    assert set(suffixes) <= CORPUS_FORMATS, f"unexpected formats: {suffixes}"
    assert suffixes[".md"] >= 3 and suffixes[".html"] >= 2 and suffixes[".csv"] >= 1, suffixes
    for name, p in files.items():
        assert p.stat().st_size > 300, f"{name} is nearly empty"
        if p.suffix in (".md", ".txt", ".html"):
            words = len(re.sub(r"<[^>]+>", " ", p.read_text(encoding="utf-8")).split())
            assert 150 <= words <= 1300, f"{name}: {words} words"


def test_legal_corpus_size_and_formats():
    files = corpus_files("legal")
    assert 30 <= len(files) <= 40, len(files)
    suffixes = Counter(p.suffix for p in files.values())
    assert suffixes[".docx"] >= 2 and suffixes[".csv"] >= 2, suffixes


def test_docx_files_open_and_have_headings(app):
    docx = pytest.importorskip("docx")
    for name, p in corpus_files(app).items():
        if p.suffix != ".docx":
            continue
        doc = docx.Document(str(p))
        headings = [para for para in doc.paragraphs if para.style.name.startswith(("Heading", "Title"))]
        words = sum(len(para.text.split()) for para in doc.paragraphs)
        assert len(headings) >= 3, f"{name}: {len(headings)} headings"
        assert 200 <= words <= 1200, f"{name}: {words} words"


def test_csv_files_have_a_text_column(app):
    for name, p in corpus_files(app).items():
        if p.suffix != ".csv":
            continue
        with p.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows, f"{name} has no rows"
        assert all(r.get("text", "").strip() for r in rows), f"{name}: a row has an empty 'text'"
        assert len({r["text"] for r in rows}) == len(rows), f"{name}: duplicate 'text' rows"


def test_catalogue_columns_and_skus():
    with (APPS / "shopping/corpus/catalogue.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert 35 <= len(rows) <= 50
    for col in ("sku", "name", "category", "price_eur", "colors", "sizes", "weight_g", "warranty_months", "text"):
        assert col in rows[0], f"catalogue.csv lacks column {col}"
    skus = [r["sku"] for r in rows]
    assert len(set(skus)) == len(skus), "duplicate SKUs"
    for r in rows:
        assert float(r["price_eur"]) > 0 and int(r["weight_g"]) > 0 and int(r["warranty_months"]) >= 0
        # the text column is what gets embedded, so it must carry the row's facts
        assert r["sku"] in r["text"] and r["price_eur"] in r["text"], r["sku"]


def test_injection_document_is_planted_once():
    name, canary = INJECTION["legal"]
    files = corpus_files("legal")
    holders = [n for n, p in files.items() if p.suffix != ".docx" and canary in p.read_text(encoding="utf-8")]
    assert holders == [name]
    text = files[name].read_text(encoding="utf-8").lower()
    assert "ignore previous instructions" in text
    assert name in (APPS / "legal/README.md").read_text(encoding="utf-8"), "README must name it"


# ---------------------------------------------------------------------------------- example bank


def test_example_bank_schema(app):
    rows = read_jsonl(APPS / app / "examples.jsonl")
    assert 20 <= len(rows) <= 40
    ids = [r.get("id") for r in rows]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids), "ids must be unique"
    for r in rows:
        assert set(r) <= {"id", "question", "answer", "reasoning"}, r["id"]
        assert r["question"].strip() and r["answer"].strip(), r["id"]
        if "reasoning" in r:
            assert r["reasoning"].strip(), r["id"]
    with_reasoning = sum("reasoning" in r for r in rows)
    assert 0.3 * len(rows) <= with_reasoning <= 0.7 * len(rows), with_reasoning
    assert len({norm(r["question"]) for r in rows}) == len(rows), "duplicate example questions"


# ---------------------------------------------------------------------------------- tuning data


def test_tune_rows_are_chat_rows_in_house_style(app):
    rows = read_jsonl(APPS / app / "tune.jsonl")
    assert 100 <= len(rows) <= 160
    corpus = corpus_files(app)
    style = STYLE[app]
    raft = 0
    for n, r in enumerate(rows, 1):
        msgs = r.get("messages")
        assert isinstance(msgs, list) and [m.get("role") for m in msgs] == ["user", "assistant"], \
            f"tune.jsonl:{n}: want exactly one user then one assistant message (no system message)"
        user, answer = msgs[0]["content"], msgs[1]["content"]
        assert user.strip() and answer.strip(), f"tune.jsonl:{n}: empty message"
        # ~4 characters a token: with a system prompt this still fits the tuner's default
        # max_length of 512 tokens, so the house-style ending is never truncated away
        assert len(user) + len(answer) <= 1600, f"tune.jsonl:{n}: row too long for 512 tokens"
        assert answer.startswith(style["start"]) and answer.endswith(style["end"]), \
            f"tune.jsonl:{n}: answer not in the house style: {answer!r}"
        body = answer[len(style["start"]): -len(style["end"])].strip()
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", body) if s]
        assert 1 <= len(sentences) <= 3, f"tune.jsonl:{n}: {len(sentences)} sentences"
        src = r.get("source", "")
        assert src.startswith("style") or src in corpus, f"tune.jsonl:{n}: unknown source {src!r}"
        if "<<<SOURCES" in user:
            raft += 1
            assert user.rstrip().rsplit("\n", 1)[-1].startswith("Question: "), f"tune.jsonl:{n}"
            quoted = re.findall(r"\[\d+\] source: (\S+)", user)
            assert quoted and (src in quoted or src == "style:injection"), f"tune.jsonl:{n}: {src} not quoted"
    assert raft >= 20, f"only {raft} RAFT rows"


def test_raft_quotes_are_real_corpus_text(app):
    """A RAFT row's quoted corpus passage is copied from the named file, so the adapter learns the
    real documents (and the eval's contamination check can trust ``source``)."""
    corpus = corpus_files(app)
    for r in read_jsonl(APPS / app / "tune.jsonl"):
        user = r["messages"][0]["content"]
        for name, quote in re.findall(r'\[\d+\] source: (\S+)\n"""\n(.*?)\n"""', user, re.S):
            if name not in corpus:
                continue  # synthetic injection-resistance contexts
            raw = corpus[name].read_text(encoding="utf-8")
            flat = norm(re.sub(r"<[^>]+>", " ", raw))
            for line in quote.splitlines():
                assert norm(line) in flat, f"{name}: quoted line not in the file: {line!r}"


def test_tuning_never_quotes_the_injection_document():
    name, canary = INJECTION["legal"]
    text = (APPS / "legal/tune.jsonl").read_text(encoding="utf-8")
    assert name not in text and canary not in text


# ------------------------------------------------------------------------------ held-out questions


def test_questions_schema_and_mix(app):
    rows = read_jsonl(APPS / app / "questions.jsonl")
    assert 36 <= len(rows) <= 48
    ids = [r.get("id") for r in rows]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids), "ids must be unique"
    corpus = corpus_files(app)
    for r in rows:
        assert set(r) == {"id", "question", "answer", "type", "relevant_docs", "tags"}, r["id"]
        assert r["question"].strip(), r["id"]
        assert r["type"] in QUESTION_TYPES, r["id"]
        assert isinstance(r["tags"], list) and all(isinstance(t, str) for t in r["tags"])
        answers = r["answer"] if isinstance(r["answer"], list) else [r["answer"]]
        assert answers and all(isinstance(a, str) for a in answers), r["id"]
        if "unanswerable" in r["tags"]:
            assert r["answer"] == "" and r["type"] == "retrieval" and r["relevant_docs"] == [], r["id"]
            continue
        assert all(a.strip() for a in answers), f"{r['id']}: empty reference"
        for doc in r["relevant_docs"]:
            assert doc in corpus, f"{r['id']}: relevant doc {doc!r} is not in the corpus"
        if r["type"] == "retrieval":
            assert r["relevant_docs"], f"{r['id']}: a retrieval question needs its documents"
            assert all(len(a.split()) <= 16 for a in answers), f"{r['id']}: keep references short for F1"
        if r["type"] == "style":
            style = STYLE[app]
            assert all(a.startswith(style["start"]) and a.endswith(style["end"]) for a in answers), r["id"]
    kinds = Counter(r["type"] for r in rows)
    assert 0.35 <= kinds["retrieval"] / len(rows) <= 0.55, kinds
    assert 0.2 <= kinds["style"] / len(rows) <= 0.35 and 0.2 <= kinds["examples"] / len(rows) <= 0.35, kinds
    assert 3 <= sum("unanswerable" in r["tags"] for r in rows) <= 5


def test_retrieval_references_appear_in_their_documents(app):
    """Each answerable retrieval reference (one of them, at least) is literally in a relevant doc,
    so a perfect retriever can find it: the facts really are in the corpus."""
    docx = pytest.importorskip("docx")
    corpus = corpus_files(app)

    def text_of(p: Path) -> str:
        if p.suffix == ".docx":
            return "\n".join(par.text for par in docx.Document(str(p)).paragraphs)
        return p.read_text(encoding="utf-8")

    for r in read_jsonl(APPS / app / "questions.jsonl"):
        if r["type"] != "retrieval" or "unanswerable" in r["tags"]:
            continue
        answers = r["answer"] if isinstance(r["answer"], list) else [r["answer"]]
        docs = norm(re.sub(r"<[^>]+>", " ", " ".join(text_of(corpus[d]) for d in r["relevant_docs"])))
        assert any(norm(a) in docs for a in answers), f"{r['id']}: no reference found in {r['relevant_docs']}"


def test_no_held_out_question_leaks_into_training_or_examples(app):
    held = {norm(r["question"]): r["id"] for r in read_jsonl(APPS / app / "questions.jsonl")}
    seen = {norm(r["question"]) for r in read_jsonl(APPS / app / "examples.jsonl")}
    seen |= {norm(user_question(r)) for r in read_jsonl(APPS / app / "tune.jsonl")}
    leaked = sorted(held[q] for q in held if q in seen)
    assert not leaked, f"held-out questions also used for examples/tuning: {leaked}"


def test_tune_sourced_questions_are_tagged(app):
    """Questions about documents the adapter was tuned on carry the ``tune-source`` tag, so the
    eval's contamination split can be checked against it."""
    sources = {r["source"] for r in read_jsonl(APPS / app / "tune.jsonl")}
    for r in read_jsonl(APPS / app / "questions.jsonl"):
        touched = bool(set(r["relevant_docs"]) & sources)
        assert touched == ("tune-source" in r["tags"]), f"{r['id']}: tune-source tag is wrong"


def test_readme_states_the_system_prompt_and_license(app):
    text = (APPS / app / "README.md").read_text(encoding="utf-8")
    assert "{app_name}" in text and "{date}" in text
    assert "Apache-2.0" in text
    assert STYLE[app]["start"] in text and STYLE[app]["end"].strip() in text


# ------------------------------------------------------------------ worked answers are correct


def _task_rows(app: str) -> list[dict]:
    return read_jsonl(APPS / app / "examples.jsonl") + read_jsonl(APPS / app / "questions.jsonl")


def test_deadline_answers_add_up():
    from datetime import datetime, timedelta

    rows = [r for r in _task_rows("legal") if r["question"].startswith("Calculate the deadline.")]
    assert len(rows) >= 5
    for r in rows:
        m = re.search(r" on (\d{1,2} \w+ \d{4})\. The time limit is (\d+) days", r["question"])
        assert m, r["id"]
        start = datetime.strptime(m.group(1), "%d %B %Y")
        end = start + timedelta(days=int(m.group(2)))
        assert r["answer"] == f"Deadline: {end.day} {end:%B %Y}", r["id"]


def test_order_totals_add_up():
    from decimal import Decimal

    rows = [r for r in _task_rows("shopping") if r["question"].startswith("Calculate the order total:")]
    assert len(rows) >= 5
    for r in rows:
        items = re.findall(r"(\d+) x [^;]+? at EUR (\d+\.\d{2})", r["question"])
        assert items, r["id"]
        subtotal = sum(int(n) * Decimal(p) for n, p in items)
        pct = re.search(r"a (\d+)% discount", r["question"])
        if pct:
            subtotal = (subtotal * (100 - int(pct.group(1))) / 100).quantize(Decimal("0.01"))
        if "express delivery." in r["question"]:
            ship = Decimal("12.50")
        else:
            ship = Decimal(0) if subtotal > 60 else Decimal("4.95")
        assert r["answer"] == f"Total: EUR {subtotal + ship:,.2f}", r["id"]


def test_product_titles_and_attributes_match_the_catalogue():
    """Few-shot answers that name catalogue products use the catalogue's own brand, model,
    colour and size names, so the bank never teaches a wrong fact."""
    with (APPS / "shopping/corpus/catalogue.csv").open(encoding="utf-8", newline="") as f:
        cat = list(csv.DictReader(f))
    names = {(p["brand"], p["name"]) for p in cat}
    colors = {c for p in cat for c in p["colors"].split("; ")}
    for r in _task_rows("shopping"):
        if r["question"].startswith("Write a product title"):
            brand, model, color, _size = (x.strip() for x in r["answer"].split("|"))
            assert (brand, model) in names, r["id"]
            assert color in colors, r["id"]
        if r["question"].startswith("Extract the color and size"):
            assert json.loads(r["answer"])["color"] in colors, r["id"]
