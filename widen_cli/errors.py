class UserError(Exception):
    """A mistake the user can fix (bad option, missing data, impossible budget).

    The CLI prints it as one line and exits with code 2; anything else is a bug.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; the message says what is saved and how to resume (exit 130)."""
