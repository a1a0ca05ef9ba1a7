#!/bin/bash
# Re-record the golden agents sessions: each plans/<slug>.toml run by the real `capsule agents run` (real
# processes, hooks, signals); `resume` is killed (SIGKILL) mid-run and resumed. Each sessions/agents/<slug>/
# gets the session's events.jsonl exactly as written (never edited by hand) and the plan it ran.
#   ./sessions/agents/record.sh            # every session
#   ./sessions/agents/record.sh hooks      # just the named ones
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$(dirname "$here")")
capsule="$root/.venv/bin/capsule"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CAPSULE_HOME="$work/home" CAPSULE_PLAIN=1 NO_COLOR=1
export PATH=/usr/local/bin:/usr/bin:/bin
cd "$work"

wanted=("$@")
keep() {  # keep SLUG: copy the only session of $CAPSULE_HOME into sessions/agents/SLUG/
    local slug=$1 run
    run=$(ls -d "$CAPSULE_HOME"/runs/*/)
    rm -rf "${here:?}/$slug"
    mkdir -p "$here/$slug"
    install -m 644 "$run/events.jsonl" "$here/$slug/"
    install -m 644 "$here/plans/$slug.toml" "$here/$slug/plan.toml"
    echo "recorded $slug ($(wc -l <"$here/$slug/events.jsonl") events)"
}
for plan in "$here"/plans/*.toml; do
    slug=$(basename "$plan" .toml)
    if ((${#wanted[@]})) && [[ " ${wanted[*]} " != *" $slug "* ]]; then
        continue
    fi
    rm -rf "$CAPSULE_HOME" slow.started
    cp "$plan" "$work/$slug.toml"
    if [[ $slug == resume ]]; then
        "$capsule" agents run "$work/$slug.toml" >/dev/null 2>&1 &
        scheduler=$!
        for _ in $(seq 500); do [[ -e slow.started ]] && break; sleep 0.02; done
        sleep 0.3  # slow runs; let a sample see it
        kill -KILL "$scheduler"
        wait "$scheduler" || true
        session=$(basename "$(ls -d "$CAPSULE_HOME"/runs/*/)")
        "$capsule" agents resume "$session" >/dev/null 2>&1 || true
    else
        "$capsule" agents run "$work/$slug.toml" >/dev/null 2>&1 || true
    fi
    keep "$slug"
done
