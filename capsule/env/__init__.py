"""Project environments, the pure part: `capsule.toml` parsing, dependency order, restart policy."""

from __future__ import annotations

# Here rather than in config.py: `capsule env status` finds the file without importing the parser.
CONFIG_NAMES = ("capsule.toml", ".runcept.toml")
