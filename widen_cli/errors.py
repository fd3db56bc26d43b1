from __future__ import annotations

import errno
import os


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


# OSErrors a user can fix (a full disk or quota, a read-only or forbidden folder): one line, not a traceback.
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.ENAMETOOLONG)


def disk_error(e: OSError) -> str | None:
    """The one line for an OSError of DISK_ERRORS: the file and the cause; None for any other."""
    if e.errno not in DISK_ERRORS:
        return None
    return f"{e.filename}: {os.strerror(e.errno)}" if e.filename else os.strerror(e.errno)
