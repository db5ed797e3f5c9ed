"""Fixtures for knowledge-base tests: a small corpus with real-looking metadata and the hash embedder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from core.types import Document
from indexes.config import IndexConfig
from indexes.embed import HashEmbedder
from indexes.kb import KnowledgeBase

TOPICS = {
    "lease.md": ("2023-03-01", "The tenant must give three months written notice before ending the lease. "
                 "Rent is due on the first day of each month and late rent carries a fee."),
    "court-fees.csv": ("2024-01-15", "Filing a civil claim costs 120 euros. Appeals cost 300 euros. "
                       "Court fees are waived for claimants on legal aid."),
    "employment.docx": ("2024-06-30", "The employee is entitled to 25 days of paid holiday per year. "
                        "Overtime is paid at one and a half times the hourly wage."),
    "privacy.html": ("2022-11-05", "Personal data is stored for at most five years and deleted on request. "
                     "The data protection officer answers requests within thirty days."),
    "whistleblowing.md": ("2025-02-20", "Reports of wrongdoing can be made anonymously to the ethics hotline. "
                          "Retaliation against a whistleblower is a disciplinary offence."),
    "recipes.txt": ("2021-07-07", "Knead the dough for ten minutes, let it rise for an hour, then bake the "
                    "bread at 220 degrees until the crust is golden."),
}


def make_docs(version: str = "") -> list[Document]:
    out = []
    for i, (src, (date, text)) in enumerate(TOPICS.items()):
        out.append(Document.create(text + (f" Version {version}." if version else ""),
                                   {"source": src, "uri": f"file:///corpus/{src}", "page": 1 + i % 2,
                                    "modified": date, "mime": "text/plain"}))
    return out


@pytest.fixture
def docs() -> list[Document]:
    return make_docs()


@pytest.fixture
def cfg() -> IndexConfig:
    return IndexConfig(embedder="hash", chunk_size=24, chunk_overlap=4)


@pytest.fixture
def kb(tmp_path, cfg, docs):
    k = KnowledgeBase.create(tmp_path / "kb", cfg, embedder=HashEmbedder())
    k.sync(docs)
    yield k
    k.close()


def snapshot(path: Path) -> dict[str, str]:
    """Hash of every file in a knowledge-base directory (to prove a failed operation changed nothing)."""
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir())
            if f.is_file() and f.name != ".lock"}
