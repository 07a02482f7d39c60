"""The ``privtune`` command: a thin typer app over the Python API.

Each command group lives in its own module under ``privtune.cli`` and exposes ``register(app)``; modules are
discovered automatically (adding a command is one new file), ordered by ``ORDER`` in ``--help``. This module only
assembles them and turns :class:`~privtune.errors.PrivtuneError` into a one-line message and exit status 2.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer
from rich.markup import escape

from privtune import __version__
from privtune.errors import PrivtuneError
from privtune.utils.progress import console

app = typer.Typer(name="privtune", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode="rich",
                  help="Fine-tune language models on private text and measure the privacy, utility and compute cost.")

# Order of command groups in --help; modules not listed come after, alphabetically.
ORDER = ["demo", "data", "account", "model", "train", "eval", "sweep", "results", "report", "bench"]


def _command_modules() -> list[str]:
    import pkgutil

    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    names.sort(key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))
    return [f"{__name__}.{n}" for n in names]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"privtune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """privtune: private fine-tuning with honest privacy accounting."""


try:
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # typer < 0.29 uses click itself
    _TyperClickException = click.ClickException

for _mod in _command_modules():
    importlib.import_module(_mod).register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI; user errors become one line on stderr and exit status 2."""
    try:
        code = app(args=argv, standalone_mode=False)   # a command's typer.Exit(N) comes back as N
    except PrivtuneError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        console.print("[red]aborted[/]")
        sys.exit(130)
    except (click.ClickException, _TyperClickException) as e:  # typer >= 0.29 vendors its own click
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)
