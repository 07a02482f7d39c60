"""The README's examples stay true: every `privtune ...` command line parses against the real CLI, and every call
in its Python block binds to the real function's signature (nothing is run: that is the demo's and the slow
tests' job)."""

import ast
import inspect
import re
import shlex
from pathlib import Path

import pytest
import typer

README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = sorted((Path(__file__).resolve().parents[1] / "docs").glob("*.md"))


def _blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text("utf-8"), flags=re.S)


def _command_lines(path: Path) -> list[str]:
    lines = []
    for block in _blocks(path, "bash"):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = re.sub(r"[\[\]]", "", line.split("  #")[0]).strip()  # "[--opt X]": optional, still parsed
            if line.startswith("privtune "):
                lines.append(line)
    return lines


def _resolve(cmd, args: list[str]) -> None:
    """Parse ``args`` the way the CLI would before running (unknown commands and options, bad choices and types
    raise here). typer ships its own click, so groups are recognised by what they do, not by class."""
    ctx = cmd.make_context("privtune", list(args))
    while hasattr(cmd, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        ctx = cmd.make_context(name, rest, parent=ctx)


CASES = [(p.name, line) for p in [README, *DOCS] for line in _command_lines(p)]


def test_readme_has_commands():
    assert sum(1 for name, _ in CASES if name == "README.md") >= 10


@pytest.mark.parametrize("where,line", CASES, ids=[f"{n}:{i}" for i, (n, _) in enumerate(CASES)])
def test_documented_command_parses(where, line):
    from privtune.cli import app

    cmd = typer.main.get_command(app)
    _resolve(cmd, shlex.split(line)[1:])


def test_readme_python_calls_bind_to_the_api():
    (code,) = _blocks(README, "python")
    tree = ast.parse(code)
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = __import__(node.module, fromlist=[a.name for a in node.names])
            for a in node.names:
                names[a.asname or a.name] = getattr(mod, a.name)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id in names]
    assert {c.func.id for c in calls} == set(names)  # every imported name is used as documented
    for c in calls:
        sig = inspect.signature(names[c.func.id])
        sig.bind(*[None] * len(c.args), **{k.arg: None for k in c.keywords})
