"""`python -m capsule.api.supervisor CONFIG …`: what `capsule env up` starts in the background.

The supervisor itself is capsule/stages/supervise.py; once it has ended and closed its session, the
session is shipped to `$CAPSULE_HOME/config.toml`'s `[export]` collector like every other session
(capsule/api/shipping.py, which the stages layer does not import).
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from capsule.stages import supervise

    code, session = supervise.serve(argv)
    if session is not None:
        from capsule.api.shipping import ship_closed

        ship_closed(session)
    return code


if __name__ == "__main__":
    sys.exit(main())
