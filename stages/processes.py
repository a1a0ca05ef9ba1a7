"""Moved to `capsule.stages.procs` (the one process-control module); kept until stages/schedule.py and
capsule/cli/agents.py import from there."""

from capsule.stages.procs import CLOCK_SLACK, process_if, returncode_status, started_at

__all__ = ["CLOCK_SLACK", "process_if", "returncode_status", "started_at"]
