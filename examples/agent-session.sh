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
touch tests/test_calc.py
git add -A && git commit -qm "initial"

# explore
ls -la src tests >/dev/null
find . -name '*.py' -not -path './.git/*' >/dev/null
grep -rn "def add" src >/dev/null
cat src/calc.py >/dev/null

# test (fails), edit, build, test again (passes)
run_tests() { python3 -m unittest -q tests/test_calc.py 2>/dev/null; }
cat > tests/test_calc.py <<'PY'
import sys, unittest; sys.path.insert(0, "src")
from calc import add
class TestAdd(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)
PY
run_tests || echo "tests failed: fixing src/calc.py"
sed -i 's/a - b/a + b/' src/calc.py
python3 -m py_compile src/calc.py
run_tests && echo "tests passed"

# vcs
git diff --stat
git commit -qam "Fix add" && git log --oneline | head -n 2
