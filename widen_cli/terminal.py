"""Where the command line prints and how a command ends: a user's mistake as one `error:` line on stderr
with exit code 2, Ctrl-C or SIGTERM as how to resume with 130, and typer's own usage errors (and a Hydra
-m/--multirun) as one `error:` line too. Only rich loads here."""
from __future__ import annotations

import functools
import signal
import sys
import threading

from rich.console import Console
from rich.markup import escape

from widen_cli.errors import UserError, disk_error

# Piped output (logs, CI) gets room for the wide tables; a terminal keeps its own width.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
console = Console(width=None if sys.stdout.isatty() else 160)


def error(message: str) -> None:
    err.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, soft_wrap=True)  # text, not markup


def multirun_hint(argv: list[str]) -> str | None:
    """Hydra users type -m/--multirun for a sweep; widen has none (sweeps are sweep-width's)."""
    flags = argv[:argv.index("--")] if "--" in argv else argv  # after --, words are arguments
    if any(a in ("-m", "--multirun") for a in flags):
        return ("widen has no Hydra multirun (-m/--multirun): a sweep over widths and seeds is "
                "`widen sweep-width` (see widen sweep-width --help)")
    return None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def user_errors(fn):
    """Print a UserError as one line and exit 2; Ctrl-C or SIGTERM (what a cluster sends before it
    pre-empts a job) prints how to resume and exits 130; everything else is a bug and keeps its traceback."""
    import typer

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from widen_cli.distributed import is_main_process

        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
        try:
            return fn(*args, **kwargs)
        except (UserError, OSError) as e:  # (a UserError is no OSError)
            message = str(e) if isinstance(e, UserError) else disk_error(e)
            if message is None:  # an OSError a user cannot fix: a bug
                raise
            if is_main_process():
                error(message)
            raise typer.Exit(2)
        except KeyboardInterrupt as e:
            if is_main_process():
                err.print(str(e) or "interrupted; run the same command again to resume", highlight=False,
                          soft_wrap=True)
            raise typer.Exit(130)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def run(app) -> None:
    """Run the typer app as the console script: typer's own usage errors (an option of the wrong type, an
    unknown option) become one `error:` line with exit code 2 as well, and so does a Hydra -m/--multirun."""
    hint = multirun_hint(sys.argv[1:])
    if hint:
        error(hint)
        sys.exit(2)
    try:
        code = app(standalone_mode=False)
    except Exception as e:  # click's UsageError, raised by typer's vendored click
        if not (hasattr(e, "format_message") and hasattr(e, "exit_code")):
            raise
        if type(e).__name__ != "NoArgsIsHelpError":  # (the help is already shown)
            error(e.format_message())
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
