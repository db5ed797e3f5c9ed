"""Cleaning steps: normalization, boilerplate, duplicates, PII."""

from __future__ import annotations

from connectors.clean import (
    content_hash, luhn_ok, near_duplicates, normalize_text, scrub_pii, strip_repeated_lines,
)


def test_normalize_nfkc_spaces_controls_and_blank_lines():
    assert normalize_text("\ufb01le\u00a0\u00a0name\r\n\r\n\r\n\r\nend\u200b\x07") == "file name\n\nend"
    assert normalize_text("  x  \t y \n") == "x y"


def test_repeated_headers_and_footers_are_removed_across_pages():
    body = ["The tenant pays rent monthly.", "Repairs are the landlord's duty.", "Notice is one month.",
            "Deposits are held in trust.", "Pets need consent."]
    pages = [
        f"ACME Corp - Confidential\n{body[i]}\nSee clause {i} for details.\n{body[i + 1]}\nPage {i} of 4"
        for i in range(4)
    ]
    cleaned, removed = strip_repeated_lines(pages)
    assert removed == 8
    assert all("ACME" not in p and "Page" not in p for p in cleaned)
    assert cleaned[2] == "Notice is one month.\nSee clause 2 for details.\nDeposits are held in trust."
    # two pages are not enough evidence
    assert strip_repeated_lines(pages[:2]) == (pages[:2], 0)


def test_exact_hash_ignores_case_and_spacing_only():
    assert content_hash("Hello,  World") == content_hash("hello world")
    assert content_hash("hello world") != content_hash("hello word")


def _essay(words: int, seed: int) -> str:
    import random

    rnd = random.Random(seed)
    vocab = [f"w{n}" for n in range(500)]
    return " ".join(rnd.choice(vocab) for _ in range(words))


def test_near_duplicates_respect_the_threshold():
    base = _essay(300, 1)
    tweaked = base.replace(base.split()[150], "CHANGED", 1)  # one word changed: ~0.97 similar
    other = _essay(300, 2)
    found = near_duplicates([base, other, tweaked], threshold=0.9)
    assert [(n.index, n.kept) for n in found] == [(2, 0)] and found[0].similarity > 0.9
    assert near_duplicates([base, other, tweaked], threshold=0.99) == []
    assert near_duplicates([base, tweaked], threshold=1.0) == []


def test_luhn():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")


def test_pii_scrub_counts_and_replaces_without_touching_dates_or_amounts():
    text = (
        "Mail jane.doe@example.com or call +1 415-555-0132 / (030) 1234 5678. "
        "Card 4111 1111 1111 1111, not a card 1234 5678 9012 3456. "
        "Delivered on 2023-01-23, 20,000 bottles, ref 12345."
    )
    out, counts = scrub_pii(text)
    assert counts == {"email": 1, "card": 1, "phone": 2}
    assert "jane.doe" not in out and "4111" not in out and "555-0132" not in out
    assert "1234 5678 9012 3456" in out  # fails the Luhn check: kept
    assert "2023-01-23" in out and "20,000" in out and "12345" in out
