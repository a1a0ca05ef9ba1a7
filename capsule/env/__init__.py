"""Project environments, the pure part: `capsule.toml` parsing, dependency order, restart policy."""
