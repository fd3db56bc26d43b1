class UserError(Exception):
    """A mistake the user can fix (bad option, missing data, impossible budget).

    The CLI prints it as one line and exits with code 2; anything else is a bug.
    """


class MemberError(UserError):
    """A UserError that concerns one run only (a damaged file of its own or of its parent, a claim
    another process took over): `widen train` stops with it; a sweep records that member as failed,
    with this message, and goes on with the others."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; the message says what is saved and how to resume (exit 130)."""
