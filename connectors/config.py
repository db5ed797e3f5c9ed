"""Settings of ``hybrid ingest`` and ``connectors.ingest``: one checked dataclass.

Load it from the commented preset ``configs/ingest.yaml`` (or build it in code)::

    from core.config import load_config
    from connectors.config import IngestConfig

    cfg = load_config(IngestConfig, "configs/ingest.yaml", ["near_dup_threshold=0.9"])
    cfg = IngestConfig(include=["**/*.pdf"], pii_scrub=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

MiB = 1024 * 1024


def _h(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class IngestConfig:
    """What to load, how to bound it, and how to clean it.

    >>> IngestConfig(near_dup_threshold=0.8).near_dup_threshold
    0.8
    """

    # --- files -------------------------------------------------------------------------
    include: list[str] = field(
        default_factory=list,
        metadata=_h("glob patterns (relative to the root, '**' crosses directories) a file must match; empty = all"),
    )
    exclude: list[str] = field(
        default_factory=lambda: ["**/.*", "**/.*/**", "**/__pycache__/**"],
        metadata=_h("glob patterns of files to leave out (hidden files and folders by default)"),
    )
    max_file_bytes: int = field(
        default=50 * MiB, metadata=_h("files larger than this are skipped with reason 'too_large'")
    )
    follow_symlinks: bool = field(
        default=True,
        metadata=_h("follow symlinks whose target stays inside the root; targets outside are always skipped"),
    )
    strict_utf8: bool = field(
        default=False,
        metadata=_h(
            "skip text files that are not UTF-8/UTF-16 (reason 'encoding') instead of detecting cp1252/latin-1"
        ),
    )
    # --- structured files ----------------------------------------------------------------
    csv_text_column: str = field(
        default="", metadata=_h("CSV column holding the text; empty = all columns as 'name: value' lines")
    )
    jsonl_text_field: str = field(
        default="text", metadata=_h("JSONL field holding the text (dots walk into objects: 'body.text')")
    )
    json_path: str = field(
        default="",
        metadata=_h(
            "JSON path of the records in a .json file, e.g. '$.items[*]' or '$.items[*].body'; empty = whole file"
        ),
    )
    json_text_field: str = field(
        default="text",
        metadata=_h("field of each record selected by json_path that holds the text; other fields become metadata"),
    )
    # --- PDF ---------------------------------------------------------------------------------
    pdf_respect_permissions: bool = field(
        default=True,
        metadata=_h("skip PDFs whose owner forbids text extraction (reason 'copy_protected')"),
    )
    pdf_strategy: Literal["fast", "hi_res"] = field(
        default="fast",
        metadata=_h(
            "fast: PDFium text layer (offline, no torch); hi_res: unstructured layout models, needs "
            "pip install 'hybrid[pdf-hires]'"
        ),
    )
    # --- bounds on every parse ----------------------------------------------------------------
    parse_timeout_s: float = field(
        default=60.0, metadata=_h("seconds one document may take to parse before its worker is killed")
    )
    parse_memory_mb: int = field(
        default=2048, metadata=_h("address-space cap of a parse worker (MiB); 0 = no cap")
    )
    workers: int = field(default=0, metadata=_h("parse worker processes; 0 = min(4, CPU count)"))
    # --- web -----------------------------------------------------------------------------------------
    web_depth: int = field(default=0, metadata=_h("links to follow from a start URL (0 = the page only)"))
    web_same_site: bool = field(default=True, metadata=_h("only follow links to the start URL's host"))
    web_max_pages: int = field(default=100, metadata=_h("stop a crawl after this many pages"))
    web_timeout_s: float = field(default=20.0, metadata=_h("seconds allowed per HTTP request"))
    web_max_bytes: int = field(default=10 * MiB, metadata=_h("responses larger than this are skipped"))
    web_max_redirects: int = field(default=5, metadata=_h("redirects followed per request"))
    web_allow_private: bool = field(
        default=False,
        metadata=_h("allow private, loopback and link-local addresses (off: refused after DNS and every redirect)"),
    )
    web_user_agent: str = field(default="hybrid-ingest/0.1", metadata=_h("User-Agent header sent"))
    # --- SQL -------------------------------------------------------------------------------------------
    sql_query: str = field(default="", metadata=_h("query for sqlite:/// sources; one row = one document"))
    sql_text_column: str = field(
        default="", metadata=_h("column holding the text; empty = all columns as 'name: value' lines")
    )
    # --- cleaning ----------------------------------------------------------------------------------------
    normalize: bool = field(default=True, metadata=_h("Unicode NFKC and whitespace cleanup"))
    strip_boilerplate: bool = field(
        default=True, metadata=_h("drop header/footer lines repeated on most pages of one document")
    )
    min_chars: int = field(default=1, metadata=_h("documents with fewer characters after cleaning are dropped"))
    dedup: bool = field(default=True, metadata=_h("drop exact duplicates (same normalized text)"))
    near_dup_threshold: float = field(
        default=0.9,
        metadata=_h("estimated Jaccard similarity of word 5-gram shingles above which a document is a near duplicate; 1.0 = off"),
    )
    num_perm: int = field(default=128, metadata=_h("MinHash permutations (more = finer estimate, slower)"))
    pii_scrub: bool = field(
        default=False, metadata=_h("replace emails, phone numbers and card numbers (Luhn-checked) with tags")
    )

    def __post_init__(self) -> None:
        if self.max_file_bytes <= 0:
            raise ValueError(f"max_file_bytes must be > 0, got {self.max_file_bytes}")
        if self.parse_timeout_s <= 0:
            raise ValueError(f"parse_timeout_s must be > 0, got {self.parse_timeout_s}")
        if self.parse_memory_mb < 0 or 0 < self.parse_memory_mb < 256:
            raise ValueError(f"parse_memory_mb must be 0 (no cap) or >= 256, got {self.parse_memory_mb}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.web_depth < 0:
            raise ValueError(f"web_depth must be >= 0, got {self.web_depth}")
        if self.web_max_pages < 1:
            raise ValueError(f"web_max_pages must be >= 1, got {self.web_max_pages}")
        if self.web_timeout_s <= 0:
            raise ValueError(f"web_timeout_s must be > 0, got {self.web_timeout_s}")
        if self.web_max_bytes <= 0:
            raise ValueError(f"web_max_bytes must be > 0, got {self.web_max_bytes}")
        if self.web_max_redirects < 0:
            raise ValueError(f"web_max_redirects must be >= 0, got {self.web_max_redirects}")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            raise ValueError(f"near_dup_threshold must be in (0, 1], got {self.near_dup_threshold}")
        if self.num_perm < 16:
            raise ValueError(f"num_perm must be >= 16, got {self.num_perm}")
        if self.min_chars < 1:
            raise ValueError(f"min_chars must be >= 1, got {self.min_chars}")
        if self.json_path and not self.json_path.startswith("$"):
            raise ValueError(f"json_path must start with '$', got {self.json_path!r}")
        for name in ("include", "exclude"):
            for pat in getattr(self, name):
                if not pat or pat.startswith("/"):
                    raise ValueError(f"{name} patterns are relative globs, got {pat!r}")
