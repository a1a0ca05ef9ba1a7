"""Capsule's one application door: the CLI, the MCP server and Python callers all go through here.

`sessions` (resolve, load, list, record, import, replay, export bodies), `environments` (up, down,
status, start/stop/restart, logs, ls, ps, kill-all), `agents` (run, check, status, result, logs, ps,
kill, resume), `retention` (prune, archive). Functions return frozen attrs records and raise the
`CapsuleError` family of `capsule.api.errors`, each error with its exit code. This layer may do I/O;
it decides nothing the core can decide, and renders nothing (that is the CLI's and MCP's part).
Submodules are imported by their users: `capsule --help` must not pay for them.
"""
