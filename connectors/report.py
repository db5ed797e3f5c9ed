"""What an ingest did: loaded, skipped (with reasons), duplicates, PII counts, time.

    result = connectors.ingest(["docs/"])
    print(result.report.render())
    result.report.to_dict()  # JSON-ready
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class SkipRecord:
    source: str
    reason: str  # stable code: empty, encrypted, corrupt, too_large, outside_root, private_address...
    message: str


@dataclass
class DuplicateRecord:
    doc_id: str
    source: str
    kept_id: str
    kept_source: str
    reason: str  # "exact" or "near"
    similarity: float = 1.0


@dataclass
class NoteRecord:
    """Something worth knowing that did not cost a document (a re-coded file, removed boilerplate)."""

    source: str
    code: str
    message: str


@dataclass
class IngestReport:
    """Counts and reasons of one ingest; ``render()`` gives the summary table the CLI prints."""

    sources: list[str] = field(default_factory=list)
    files_seen: int = 0  # files, pages fetched, queries run
    loaded: int = 0  # documents parsed, before cleaning and dedup
    kept: int = 0  # documents in the result
    skipped: list[SkipRecord] = field(default_factory=list)
    duplicates: list[DuplicateRecord] = field(default_factory=list)
    notes: list[NoteRecord] = field(default_factory=list)
    pii: dict[str, int] = field(default_factory=dict)
    boilerplate_lines: int = 0
    elapsed_s: float = 0.0

    def skip(self, source: str, reason: str, message: str) -> None:
        self.skipped.append(SkipRecord(source, reason, message))

    @property
    def skips(self) -> list[SkipRecord]:
        """Alias of ``skipped`` (the demo and other callers read it under this name)."""
        return self.skipped

    def skip_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(s.reason for s in self.skipped).items()))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skip_counts"] = self.skip_counts()
        d["duplicate_counts"] = dict(Counter(x.reason for x in self.duplicates))
        return d

    def render(self, max_rows: int = 50) -> str:
        """A plain-text table: totals first, then one line per skip and duplicate."""
        dup = Counter(x.reason for x in self.duplicates)
        rows = [
            ("loaded", f"{self.loaded} documents from {self.files_seen} sources"),
            ("kept", f"{self.kept} documents"),
            ("skipped", f"{len(self.skipped)}" + (
                " (" + ", ".join(f"{r}: {n}" for r, n in self.skip_counts().items()) + ")" if self.skipped else "")),
            ("duplicates", f"{len(self.duplicates)} (exact: {dup.get('exact', 0)}, near: {dup.get('near', 0)})"),
        ]
        if self.boilerplate_lines:
            rows.append(("boilerplate", f"{self.boilerplate_lines} repeated header/footer lines removed"))
        if self.pii:
            rows.append(("pii scrubbed", ", ".join(f"{k}: {v}" for k, v in sorted(self.pii.items()))))
        rows.append(("elapsed", f"{self.elapsed_s:.2f} s"))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)}  {v}" for k, v in rows]

        def section(title: str, items: list[tuple[str, str, str]]) -> None:
            if not items:
                return
            lines.append("")
            lines.append(title)
            w1 = min(48, max(len(a) for a, _, _ in items))
            w2 = max(len(b) for _, b, _ in items)
            for a, b, c in items[:max_rows]:
                lines.append(f"  {a.ljust(w1)}  {b.ljust(w2)}  {c}")
            if len(items) > max_rows:
                lines.append(f"  ... and {len(items) - max_rows} more")

        section("skipped (source, reason, detail):", [(s.source, s.reason, s.message) for s in self.skipped])
        section(
            "duplicates (dropped, reason, kept):",
            [(d.source, d.reason if d.reason == "exact" else f"near {d.similarity:.2f}", d.kept_source)
             for d in self.duplicates],
        )
        section("notes:", [(n.source, n.code, n.message) for n in self.notes])
        return "\n".join(lines)
