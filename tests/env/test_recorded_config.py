"""The config text an env session keeps: env values masked, commands redacted, the same machine input."""

from __future__ import annotations

from capsule.env.config import parse_config
from capsule.env.recorded import recorded_config_text

CONFIG = """
[project]
name = "shop"
inactivity_timeout = "30m"

[[process]]
name = "db"
command = "postgres --password hunter2secret"
env = { DB_PASSWORD = "hunter2secret", PLAIN = "visible" }
health_check = "tcp://127.0.0.1:5432"

[[process]]
name = "web"
command = "python -m http.server --token=s3cr3t-value-xyz"
depends_on = ["db"]
health_check = "http://127.0.0.1:8000/"
"""


def test_env_values_and_command_secrets_never_stay() -> None:
    """No env value and no secret in a command survives; names, shape and every other field do."""
    kept = recorded_config_text(CONFIG)
    for secret in ("hunter2secret", "s3cr3t-value-xyz", "visible"):
        assert secret not in kept
    before, after = parse_config(CONFIG, "capsule.toml"), parse_config(kept, "capsule.toml")
    assert [p.name for p in after.processes] == [p.name for p in before.processes]
    assert [p.depends_on for p in after.processes] == [p.depends_on for p in before.processes]
    assert [p.health_check for p in after.processes] == [p.health_check for p in before.processes]
    assert [len(p.argv) for p in after.processes] == [len(p.argv) for p in before.processes]
    assert after.inactivity_timeout == before.inactivity_timeout
    assert {k for p in after.processes for k, _v in p.env} == {"DB_PASSWORD", "PLAIN"}


def test_not_toml_is_redacted_text() -> None:
    """A file that is not TOML is kept as redacted text (the machine refuses it as it refused the original)."""
    assert "hunter2secret" not in recorded_config_text("[[process\ncommand = 'x --password hunter2secret'")
