"""``hybrid app show`` on an app whose corpus folder is gone: one error line and exit 2, not a
cheerful summary and exit 0."""

from __future__ import annotations

import shutil

import pytest

from hybrid.cli import main
from tests.core.test_cli import cli_app  # noqa: F401  (the fixture: hash embedder, scripted model, a corpus)


def run(capsys, *args):
    with pytest.raises(SystemExit) as e:
        main(list(args))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_app_show_with_a_missing_corpus_exits_2_with_one_line(cli_app, capsys):  # noqa: F811
    shutil.rmtree(cli_app / "corpus")
    code, out, err = run(capsys, "app", "show", str(cli_app))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: app testapp: knowledge_base.sources entry 'corpus' does not exist")
    assert str(cli_app / "corpus") in lines[0]


def test_app_show_with_its_corpus_still_exits_0(cli_app, capsys):  # noqa: F811
    try:
        main(["app", "show", str(cli_app)])
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr()
    assert "app: testapp" in capsys.readouterr().out
