#!/usr/bin/env bash
# A small, real session in the shape of an AI coding agent's work: it explores a project, edits a
# file, builds, runs the tests (one fails first, then passes), and commits. Used by `just demo`.
set -u
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
git init -q . && git config user.email demo@example.com && git config user.name demo

mkdir -p src tests
cat > src/calc.py <<'PY'
def add(a, b):
    return a - b
PY
cat > tests/test_calc.py <<'PY'
import sys; sys.path.insert(0, "src")
from calc import add
def test_add():
    assert add(2, 3) == 5
PY
git add -A && git commit -qm "initial"

# explore
ls -la src tests >/dev/null
find . -name '*.py' -not -path './.git/*' >/dev/null
grep -rn "def add" src >/dev/null
cat src/calc.py >/dev/null

# test (fails), edit, build, test again (passes)
python3 -m unittest discover -s tests -p 'test_*.py' 2>/dev/null || python3 -c "import sys; sys.path.insert(0,'tests'); import test_calc; test_calc.test_add()" 2>/dev/null
sed -i 's/a - b/a + b/' src/calc.py
python3 -m py_compile src/calc.py
python3 -c "import sys; sys.path.insert(0,'tests'); import test_calc; test_calc.test_add(); print('tests passed')"

# vcs
git diff --stat
git commit -qam "Fix add" && git log --oneline | head -n 2
