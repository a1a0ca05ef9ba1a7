"""Agent-run plans, pure: parsing and validation, the DAG, the policy matcher and retry decisions."""

from __future__ import annotations

from capsule.plan.spec import Hook, Plan, PlanError, TaskSpec, parse_batch, parse_plan, plan_from_json
from capsule.policy.rules import Policy

__all__ = ["Hook", "Plan", "PlanError", "Policy", "TaskSpec", "parse_batch", "parse_plan", "plan_from_json"]
