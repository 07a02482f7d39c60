"""Running the CLI in-process in tests: exit status, stdout and stderr of one `privtune ...` call."""

from privtune.cli import main


def run(args, capsys):
    """``(exit status, stdout, stderr)`` of ``privtune ARGS`` (0 when it returns without SystemExit)."""
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
