"""Data quality: normalization, boilerplate removal, exact and near-duplicate detection, PII scrub.

Each step is a plain function over plain values, so it can be tested and reused alone::

    normalize_text("ﬁle\\u00a0 name\\r\\n\\r\\n\\r\\nend")   # -> 'file name\\n\\nend'
    scrub_pii("mail me: a@b.org")                       # -> ('mail me: [EMAIL]', {'email': 1})
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

# Invisible characters that only break tokenization: zero-width space/joiners, soft hyphen, BOM.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\u00ad\ufeff"), None)
# C0/C1 control characters other than tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANKS = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """NFKC, line endings, invisible/control characters, runs of spaces and blank lines."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = text.translate(_INVISIBLE)
    text = _CONTROL.sub(" ", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANKS.sub("\n\n", "\n".join(lines)).strip()


# --- repeated headers and footers -----------------------------------------------------------------

_DIGITS = re.compile(r"\d+")
_EDGE_LINES = 2  # headers and footers live in the first and last lines of a page


def _line_key(line: str) -> str:
    # "Page 3 of 10" and "Page 4 of 10" are the same footer; only short lines get this treatment,
    # so numbered body sentences ("Step 3 ...") are not mistaken for one.
    key = line.strip().casefold()
    return _DIGITS.sub("#", key) if len(key.split()) <= 5 else key


def strip_repeated_lines(pages: Sequence[str], min_pages: int = 3, share: float = 0.6) -> tuple[list[str], int]:
    """Remove lines that sit at the top or bottom of at least ``share`` of the pages.

    Needs ``min_pages`` pages: with two, a repeated line is as likely content as a header.
    Returns the cleaned pages and the number of lines removed.
    """
    if len(pages) < min_pages:
        return list(pages), 0
    counts: Counter[str] = Counter()
    for page in pages:
        lines = [ln for ln in page.split("\n") if ln.strip()]
        edge = set(lines[:_EDGE_LINES] + lines[-_EDGE_LINES:])
        counts.update({_line_key(ln) for ln in edge})
    need = max(2, int(share * len(pages) + 0.999))
    boiler = {k for k, c in counts.items() if c >= need and k}
    if not boiler:
        return list(pages), 0
    out, removed = [], 0
    for page in pages:
        lines = page.split("\n")
        nonblank = [i for i, ln in enumerate(lines) if ln.strip()]
        edge_idx = set(nonblank[:_EDGE_LINES] + nonblank[-_EDGE_LINES:])
        kept = []
        for i, ln in enumerate(lines):
            if i in edge_idx and _line_key(ln) in boiler:
                removed += 1
                continue
            kept.append(ln)
        out.append("\n".join(kept).strip())
    return out, removed


# --- duplicates ---------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+")


def content_hash(text: str) -> str:
    """Hash of the text with case and whitespace differences removed (exact-duplicate key)."""
    return hashlib.sha256(" ".join(_WORD.findall(text.casefold())).encode("utf-8")).hexdigest()


def shingles(text: str, n: int = 5) -> set[str]:
    words = _WORD.findall(text.casefold())
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


@dataclass
class NearDup:
    index: int  # the dropped document
    kept: int  # the earlier document it resembles
    similarity: float  # exact Jaccard of the shingle sets


def near_duplicates(texts: Sequence[str], threshold: float, num_perm: int = 128, min_words: int = 20) -> list[NearDup]:
    """Indices of texts whose word-5-gram Jaccard with an earlier text is >= ``threshold``.

    MinHash/LSH (datasketch) proposes candidates in near-linear time; each candidate is then
    confirmed with the exact Jaccard of the shingle sets, so LSH false positives never drop a
    document. Texts under ``min_words`` words are left to exact dedup: too little evidence.
    """
    if threshold >= 1.0 or len(texts) < 2:
        return []
    from datasketch import MinHash, MinHashLSH

    # LSH only proposes candidates; capping its threshold keeps enough bands (datasketch needs
    # two or more) and recall high, and the exact check below applies the real threshold.
    lsh = MinHashLSH(threshold=min(threshold, 0.85), num_perm=num_perm)
    sets: dict[int, set[str]] = {}
    out: list[NearDup] = []
    for i, text in enumerate(texts):
        if len(_WORD.findall(text)) < min_words:
            continue
        sh = shingles(text)
        mh = MinHash(num_perm=num_perm, seed=1)
        mh.update_batch([s.encode("utf-8") for s in sh])
        best: NearDup | None = None
        for j in lsh.query(mh):
            other = sets[j]
            sim = len(sh & other) / len(sh | other)
            if sim >= threshold and (best is None or sim > best.similarity):
                best = NearDup(i, j, sim)
        if best is not None:
            out.append(best)
            continue
        sets[i] = sh
        lsh.insert(i, mh)
    return out


# --- PII --------------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
# 13-19 digits, optionally grouped by single spaces or dashes (card numbers as people write them).
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# International (+CC ...) or grouped national numbers with 7-15 digits; dates (2023-01-05) and
# plain numbers (20,000) do not match because groups need 3+ digits after the first separator.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,5}\)[ .-]?|\d{2,5}[ .-])\d{3,4}[ .-]?\d{3,4}(?![\w])"
)


def luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


def scrub_pii(text: str) -> tuple[str, dict[str, int]]:
    """Replace e-mail addresses, card numbers (Luhn-valid only) and phone numbers with tags.

    Returns the new text and counts per kind; the matched values are never returned or logged.
    """
    counts = {"email": 0, "card": 0, "phone": 0}

    def sub_email(m: re.Match[str]) -> str:
        counts["email"] += 1
        return "[EMAIL]"

    def sub_card(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group(0))
        if luhn_ok(digits):
            counts["card"] += 1
            return "[CARD]"
        return m.group(0)

    def sub_phone(m: re.Match[str]) -> str:
        before, after = m.string[max(0, m.start() - 2) : m.start()], m.string[m.end() : m.end() + 2]
        if re.search(r"\d[ -]?$", before) or re.match(r"[ -]?\d", after):
            return m.group(0)  # part of a longer digit run (an account number, a failed card)
        n = sum(c.isdigit() for c in m.group(0))
        if 7 <= n <= 15:
            counts["phone"] += 1
            return "[PHONE]"
        return m.group(0)

    text = _EMAIL.sub(sub_email, text)
    text = _CARD.sub(sub_card, text)  # before phones: a card number also looks like a long phone
    text = _PHONE.sub(sub_phone, text)
    return text, counts
