"""The command line: thin click wrappers over plain library functions.

Only this module imports click. Each command parses its options, calls one
library function and prints what it returns. A library error (NncliError)
becomes one line on stderr, ``Error: ...``, and its exit status; a traceback
is shown only with ``nncli --debug``.
"""

from __future__ import annotations

import functools
import sys
import traceback

import click

from nncli import __version__
from nncli.errors import NncliError


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def handled(func):
    """Run a command body, turning library errors into one line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        debug = bool((click.get_current_context().find_root().obj or {}).get("debug"))
        try:
            return func(*args, **kwargs)
        except NncliError as exc:
            if debug:
                traceback.print_exc()
            _fail(exc.message, exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                traceback.print_exc()
            _fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as exc:  # an nncli bug: still one line unless --debug
            if debug:
                traceback.print_exc()
            first = str(exc).splitlines()[0] if str(exc) else ""
            _fail(f"internal error: {type(exc).__name__}: {first} (run with --debug for the traceback)", 1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nncli")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """nncli: train neural networks from YAML configs, built on PyTensor."""
    ctx.obj = {"debug": debug}


# --- grad -------------------------------------------------------------------
# (the `grad` command block: owned by the expression-language work)
# --- end grad ---------------------------------------------------------------


if __name__ == "__main__":  # pragma: no cover
    main()
