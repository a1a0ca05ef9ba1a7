"""Capsule: a flight recorder and supervisor for AI coding agents and the commands they run.

`capsule/` is the functional core: it decides, and never does I/O. The trio shell lives in `stages/`.
"""

from __future__ import annotations

__version__ = "0.1.0"
