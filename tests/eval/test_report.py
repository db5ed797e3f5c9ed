import json

import pytest

from hybrid.eval.report import oracle_labels, summarize, write_report


def row(qid, strategy, primary, qtype, routed_to=None, latency=1.0, contaminated=False):
    return {"question_id": qid, "strategy": strategy, "type": qtype, "routed_to": routed_to,
            "scores": {"primary": primary, "f1": primary, "em": 0.0, "rouge_l": primary, "bleu": 0.0,
                       "groundedness": 1.0},
            "latency_s": latency, "prompt_tokens": 100, "completion_tokens": 20, "contaminated": contaminated,
            "unanswerable": False, "error": None}


@pytest.fixture
def rows():
    out = []
    for i in range(10):  # retrieval questions: rag wins
        q = f"r{i}"
        out += [row(q, "rag", 0.9, "retrieval", latency=2.0), row(q, "tuned", 0.1, "retrieval"),
                row(q, "auto", 0.9 if i < 8 else 0.1, "retrieval", routed_to="rag" if i < 8 else "tuned")]
    for i in range(10):  # style questions: tuned wins
        q = f"s{i}"
        out += [row(q, "rag", 0.2, "style", latency=2.0), row(q, "tuned", 0.7, "style", contaminated=i < 3),
                row(q, "auto", 0.7, "style", routed_to="tuned")]
    return out


def test_oracle_picks_best_fixed_strategy(rows):
    o = oracle_labels(rows, {})
    assert o["r0"] == ("rag", 0.9) and o["s0"] == ("tuned", 0.7)


def test_summary_numbers_follow_from_rows(rows):
    s = summarize(rows, costs={"rag": 2.0, "tuned": 1.0})
    assert s["n_questions"] == 20
    assert s["strategies"]["rag"]["primary"]["mean"] == pytest.approx((0.9 * 10 + 0.2 * 10) / 20)
    assert s["oracle"]["primary"] == pytest.approx((0.9 * 10 + 0.7 * 10) / 20)
    assert s["router"]["accuracy_vs_oracle"] == pytest.approx(18 / 20)
    assert s["router"]["confusion"]["rag"] == {"rag": 8, "tuned": 2}
    assert s["strategies"]["tuned"]["contaminated"]["n"] == 3
    assert s["strategies"]["rag"]["by_type"]["retrieval"]["mean"] == pytest.approx(0.9)
    text = " ".join(s["verdict"])
    assert "On retrieval questions rag wins" in text and "On style questions tuned wins" in text
    lo, hi = s["strategies"]["auto"]["primary"]["ci95"]
    assert lo <= s["strategies"]["auto"]["primary"]["mean"] <= hi


def test_report_files_are_written_and_html_is_self_contained(rows, tmp_path):
    s = summarize(rows)
    files = write_report(s, tmp_path, title="Test report")
    for key in ("summary", "markdown", "html", "score_by_strategy", "quality_vs_latency", "router_confusion", "by_type"):
        assert files[key].is_file() and files[key].stat().st_size > 0
    html = files["html"].read_text()
    assert "data:image/png;base64," in html and "http://" not in html and "https://" not in html
    assert json.loads(files["summary"].read_text())["n_questions"] == 20
    assert "## Verdict" in files["markdown"].read_text()


def test_verdict_says_when_no_strategy_differs_and_compares_routers_with_langchain():
    from hybrid.eval.report import summarize

    rows = []
    for i in range(20):
        for s, v in (("few_shot", 0.1 + 0.01 * (i % 3)), ("rag", 0.1 + 0.01 * ((i + 1) % 3)), ("langchain", 0.05)):
            rows.append({"question_id": f"q{i}", "type": "squad", "strategy": s, "scores": {"primary": v, "f1": v}})
        rows.append({"question_id": f"q{i}", "type": "squad", "strategy": "auto", "routed_to": "rag",
                     "scores": {"primary": 0.1 + 0.01 * ((i + 1) % 3), "f1": 0.1}})
    v = summarize(rows)["verdict"]
    assert any("No fixed strategy is significantly better" in line for line in v)
    assert any("Against the LangChain RAG chain (0.050), routed answers score: auto 2.21x" in line for line in v)


def test_report_html_renders_tables_lists_headings_and_inlined_plots(rows, tmp_path):
    from lxml import html as lxml_html

    files = write_report(summarize(rows), tmp_path, title="Report <script>alert(1)</script> & co")
    md, page = files["markdown"].read_text(), files["html"].read_text()
    tree = lxml_html.fromstring(page)
    # every Markdown table becomes a <table> whose header cells are <th> and whose cells are the Markdown's
    md_tables, cur = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            if cur is None:
                cur = []
                md_tables.append(cur)
            if not set(line.replace("|", "").strip()) <= {"-"}:
                cur.append([c.strip() for c in line.strip("|").split("|")])
        else:
            cur = None
    tables = tree.xpath("//table")
    assert len(tables) == len(md_tables) >= 4
    for table, want in zip(tables, md_tables):
        assert [th.text_content() for th in table.xpath(".//thead/tr/th")] == want[0]
        assert [[td.text_content() for td in tr.xpath("./td")] for tr in table.xpath(".//tbody/tr")] == want[1:]
    assert tree.xpath("//h1")[0].text_content() == "Report <script>alert(1)</script> & co"
    assert not tree.xpath("//body//script")  # text is escaped, never passed through as markup
    assert "Verdict" in [h.text_content() for h in tree.xpath("//h2")]
    verdict = tree.xpath("//ul/li")
    assert verdict and verdict[0].text_content().startswith("Best overall:")
    imgs = tree.xpath("//img")
    assert len(imgs) == 4 and all(i.get("src").startswith("data:image/png;base64,") for i in imgs)
    assert {i.get("alt") for i in imgs} == {"score_by_strategy", "quality_vs_latency", "router_confusion", "by_type"}


@pytest.mark.parametrize("n", range(1, 12))
@pytest.mark.parametrize("q", [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1 / 6])
def test_quantile_is_the_nearest_rank_value(n, q):
    from hybrid.eval.report import _quantile

    xs = [float(x) for x in range(n, 0, -1)] + [None]
    ranked = sorted(x for x in xs if x is not None)
    assert _quantile(xs, q) == ranked[round(q * (n - 1))]  # index rounded half to even, as before numpy
    assert _quantile([None], q) == 0.0 and _quantile([], q) == 0.0
