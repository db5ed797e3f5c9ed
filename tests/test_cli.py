import subprocess
import sys

from hybrid.cli import COMMANDS, LazyGroup, cli


def run(*args):
    return subprocess.run([sys.executable, "-m", "hybrid", *args], capture_output=True, text=True, timeout=120)


def test_help_lists_every_available_command():
    r = run("--help")
    assert r.returncode == 0
    listed = LazyGroup.list_commands(cli, None)
    assert listed, "no command modules found"
    for name in listed:
        assert name in r.stdout
    assert set(listed) <= set(COMMANDS)


def test_unknown_command_is_one_line_exit_2():
    r = run("no-such-command")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "No such command" in r.stderr


def test_user_error_is_one_line_exit_2(tmp_path):
    # a HybridError raised inside a command is translated at the edge
    import click

    from hybrid.cli import main
    from core.errors import InputError

    @cli.command("boom-test")
    def boom():
        raise InputError("k must be > 0, got -1")

    try:
        proc = None
        import contextlib
        import io

        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            try:
                main(["boom-test"])
            except SystemExit as e:
                proc = e.code
        assert proc == 2
        assert err.getvalue().strip() == "error: k must be > 0, got -1"
    finally:
        cli.commands.pop("boom-test", None)
        assert isinstance(cli, click.Group)
