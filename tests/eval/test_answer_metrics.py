import math

import pytest

from hybrid.eval.metrics import (answer_scores, bleu, exact_match, groundedness, is_refusal, normalize_answer,
                                 rouge_l, token_f1)
from hybrid.eval.stats import bootstrap_ci, paired_bootstrap


def test_squad_normalization():
    assert normalize_answer("The  Cat, sat!") == "cat sat"


def test_exact_match_takes_best_reference():
    assert exact_match("The Cat!", ["dog", "cat"]) == 1.0
    assert exact_match("cats", "cat") == 0.0


def test_token_f1_hand_computed():
    # pred {cat, sat}, ref {cat, sat, down}: P = 1, R = 2/3, F1 = 0.8
    assert token_f1("The cat sat", ["a cat sat down"]) == pytest.approx(0.8)
    assert token_f1("nothing shared", "cat") == 0.0


def test_rouge_l_hand_computed():
    # LCS of "x y z w" and "x z w v" is 3: P = R = 3/4
    assert rouge_l("x y z w", "x z w v") == pytest.approx(0.75)


def test_bleu_bounds():
    assert bleu("the notice period is thirty days", "the notice period is thirty days") == pytest.approx(1.0)
    assert bleu("x y", "z w") == 0.0
    mid = bleu("notice period is thirty days", "the notice period is thirty calendar days")
    assert 0.0 < mid < 1.0


def test_empty_cases_never_nan():
    for fn in (exact_match, token_f1, rouge_l, bleu):
        for pred, ref in (("", ""), ("", "x"), ("x", ""), ("", [])):
            v = fn(pred, ref)
            assert not math.isnan(v)
            assert 0.0 <= v <= 1.0
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0


def test_groundedness_hand_computed_and_flags():
    score, flag = groundedness("Rent is due in 30 days", "The rent shall be paid within 30 days")
    assert flag is None
    assert score == pytest.approx(3 / 4)  # rent, 30, days of rent, due, 30, days
    assert groundedness("", "context") == (1.0, "empty_answer")
    assert groundedness("a claim", "") == (0.0, "empty_context")


def test_refusal_detection():
    assert is_refusal("I don't know based on the documents.")
    assert is_refusal("   ")
    assert not is_refusal("The deposit is two months' rent.")


def test_answer_scores_has_every_metric():
    s = answer_scores("thirty days", ["30 days", "thirty days"])
    assert s["em"] == 1.0 and s["f1"] == 1.0 and s["length"] == 2.0


def test_bootstrap_ci_contains_mean():
    vals = [0.0, 1.0] * 50
    lo, hi = bootstrap_ci(vals)
    assert lo < 0.5 < hi
    assert bootstrap_ci([]) == (0.0, 0.0)
    assert bootstrap_ci([0.3]) == (0.3, 0.3)


def test_paired_bootstrap_detects_a_real_difference():
    a = [1.0] * 40 + [0.0] * 10
    b = [0.0] * 40 + [1.0] * 10
    diff, (lo, hi), p = paired_bootstrap(a, b)
    assert diff == pytest.approx(0.6)
    assert lo > 0 and p < 0.01
    same, (lo2, hi2), p2 = paired_bootstrap(a, a)
    assert same == 0.0 and p2 == 1.0


def test_paired_bootstrap_rejects_unpaired():
    with pytest.raises(ValueError, match="equal length"):
        paired_bootstrap([1.0], [1.0, 0.0])
