# Capsule's tasks. `just setup` makes .venv; every other task runs from it.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
bin := venv / "bin"
# the MCP Inspector (npm) that tests/mcp/test_inspector.py drives, in a project-local folder
inspector := "@modelcontextprotocol/inspector@2.12.0"

# list the tasks
default:
    @just --list

# create .venv, install capsule with its dev tools, and make sure strace and bubblewrap are installed
setup:
    test -x {{bin}}/python || python3 -m venv {{venv}}
    {{bin}}/python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
    {{bin}}/python -c 'import capsule, trio, typer' 
    command -v strace >/dev/null || { apt-get update -qq && apt-get install -y -qq strace; }
    test -x .node/node_modules/.bin/mcp-inspector || {{bin}}/python -m tests.mcp.inspector install {{inspector}}
    # bpftrace: the eBPF tracer (`capsule run --tracer ebpf`, root only); its tests skip where it cannot run
    command -v bpftrace >/dev/null || [ "$(id -u)" != 0 ] || { apt-get update -qq && apt-get install -y -qq bpftrace; }
    test -x tools/eslint/node_modules/.bin/eslint || npm ci --prefix tools/eslint --no-audit --no-fund --silent
    command -v bwrap >/dev/null || { apt-get update -qq && apt-get install -y -qq bubblewrap; }  # the guard's path rules

# record a real example (a small agent-style session: explore, edit, build, test, vcs) and report it
demo: setup
    {{bin}}/capsule run --name demo -- bash examples/agent-session.sh || true
    {{bin}}/capsule report latest

# lint, then the whole test suite (real strace included)
test: setup browser lint
    {{bin}}/python -m pytest -q -p no:cacheprovider

# headless Chromium and its driver, for the HTML report's browser test (not needed to use capsule)
browser:
    command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

# ruff, mypy, the layering check (import-linter) and ESLint on the HTML report's script
lint: 
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .
    {{bin}}/mypy
    {{bin}}/lint-imports --no-cache
    test -x tools/eslint/node_modules/.bin/eslint || npm ci --prefix tools/eslint --no-audit --no-fund --silent
    tools/eslint/node_modules/.bin/eslint --config tools/eslint/eslint.config.mjs capsule/report/assets/

# benchmarks: ratios against a reference measured in the same run (see tests/bench/README.md)
bench: setup
    command -v parallel >/dev/null || { apt-get update -qq && apt-get install -y -qq parallel; }
    {{bin}}/python -m tests.bench

# re-record expected outputs of the golden sessions in sessions/ (review the diff before committing)
bless: setup
    {{bin}}/python -m tests.golden bless

# regenerate schemas/ from capsule/events/
schemas: setup
    {{bin}}/python -m capsule.stages.schemas write
