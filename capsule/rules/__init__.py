"""Data rules (TOML) for process labels and agent workflows; read by the CLI, folded by capsule.fold."""
