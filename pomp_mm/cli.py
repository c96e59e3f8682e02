"""What every pomp_mm tool shares on the command line: a user's mistake is one line naming the
value and exit code 2 (as argparse does for a bad option), the traceback only with ``--debug``
or ``POMP_MM_DEBUG=1``; and argument types that refuse nonsense when parsing."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, NoReturn, Optional

__all__ = ['DEBUG_ENV', 'USER_ERRORS', 'run', 'positive_int']

DEBUG_ENV = 'POMP_MM_DEBUG'
#: what a user's input raises (a missing file, a value out of range, an unknown name)
USER_ERRORS = (OSError, ValueError, KeyError, TypeError)


def run(main: Callable[[], Optional[int]]) -> NoReturn:
    """Call a tool's ``main()`` and exit with its return code; errors a user can cause end
    the process with ``<tool>: error: <message>`` and exit code 2. ``--debug`` anywhere on the
    command line (taken out before ``main`` parses it) or ``POMP_MM_DEBUG=1`` re-raises them."""
    debug = '--debug' in sys.argv[1:] or os.environ.get(DEBUG_ENV, '') not in ('', '0')
    sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a != '--debug']
    try:
        code = main()
    except USER_ERRORS as err:
        if debug:
            raise
        prog = os.path.basename(sys.argv[0])
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f'{prog}: error: {message} (--debug for the traceback)', file=sys.stderr)
        sys.exit(2)
    # some mains return what they wrote (a path); only an int is an exit status
    sys.exit(code if isinstance(code, int) else 0)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'{value} is not >= 1')
    return value
