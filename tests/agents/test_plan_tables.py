"""Plans, strictly: unknown keys in every table (with "did you mean"), templates, params and matrices,
graphlib ordering with cycles named, redundant edges as notes, priorities, and the stored plan of earlier
sessions unchanged by the fields added since."""

from __future__ import annotations

import hashlib
import itertools
import re

import attrs
import orjson
import pytest

from capsule.plan import PlanError, parse_plan, plan_from_json
from capsule.plan.dag import (
    dispatch_order,
    find_cycle,
    levels,
    past_timeout,
    redundant_edges,
    simulate,
    topological,
)
from capsule.plan.spec import TaskSpec, fill_inputs

TASK = '[[task]]\nid = "a"\ncommand = "true"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TASK + '[defaults]\ntimout = "1s"\n', "[defaults]: unknown key 'timout' (did you mean 'timeout'?)"),
        (TASK + "[run]\nparalel = 8\n", "[run]: unknown key 'paralel' (did you mean 'parallel'?)"),
        (TASK + "[rum]\nparallel = 8\n", "the plan: unknown key 'rum' (did you mean 'run'?)"),
        ('[[task]]\nid = "a"\ncommand = "x"\nretires = 2\n', "task 'a': unknown key 'retires' (did you mean 'retries'?)"),
        ('[[task]]\nid = "a"\ncommand = "x"\nzzz = 2\n', "task 'a': unknown key 'zzz'"),
        ('[[task]]\nid = "a"\ncommand = "x"\nlimits = { memroy = "1G" }\n', "task 'a': limits: unknown key 'memroy' (did you mean 'memory'?)"),
        (TASK + '[defaults.limits]\ncpu = "1s"\n', "[defaults] limits: unknown key 'cpu'"),
        (TASK + '[[hook]]\non = "pre"\ncommand = "x"\ntimeot = 1\n', "hook #1: unknown key 'timeot' (did you mean 'timeout'?)"),
        (TASK + '[policy]\ndeny_comands = ["x"]\n', "[policy]: unknown key 'deny_comands'"),
        ('[[task]]\nid = "a"\ncommand = "x"\nisolate = "vm"\n', "task 'a': isolate: expected one of worktree, copy"),
        (TASK + '[run]\nexecutor = "k8s"\n', "[run] executor: expected one of local, ray"),
        (TASK + '[run]\ntimeout = "soon"\n', "[run] timeout"),
        ('[[task]]\nid = "a"\ncommand = "x"\npriority = "high"\n', "task 'a': priority: expected an integer"),
        ('[[task]]\nid = "a"\ncommand = "cat {inputs.b.stdout}"\n[[task]]\nid = "b"\ncommand = "x"\n', "task 'a': {inputs.b...}: 'b' is not in its depends_on"),
        ('[[task]]\ntemplate = "fx"\n[[template]]\nid = "fix"\ncommand = "x"\n', "template: no template 'fx' (did you mean 'fix'?)"),
        ('[[task]]\ntemplate = "fix"\n[[template]]\nid = "fix"\nparams = ["file"]\ncommand = "x {file}"\n', "param 'file' is not given"),
        ('[[task]]\ntemplate = "fix"\nparams = { fiel = "a" }\n[[template]]\nid = "fix"\nparams = ["file"]\ncommand = "x {file}"\n', "template 'fix' has no param 'fiel' (did you mean 'file'?)"),
        ('[[task]]\nid = "t"\ncommand = "x"\nmatrix = { v = [] }\n', "task 't': matrix.v: expected a non-empty list"),
    ],
)  # fmt: skip
def test_strict_tables_name_table_and_key(text: str, message: str) -> None:
    """Every table of a plan is strict: an unknown key or bad value is one error naming table and key."""
    with pytest.raises(PlanError) as info:
        parse_plan(text)
    assert message in str(info.value)


def test_run_keys_pass_through() -> None:
    """[run] timeout, base, author, executor and address reach the plan unchanged."""
    plan = parse_plan(
        TASK
        + '[run]\ntimeout = "2m"\nbase = "main"\nauthor = "Bot <b@x>"\nexecutor = "ray"\naddress = "ray://h:10001"\n'
    )
    assert (plan.timeout_s, plan.base, plan.author, plan.executor, plan.address) == (
        120.0, "main", "Bot <b@x>", "ray", "ray://h:10001",
    )  # fmt: skip
    assert plan_from_json(plan.to_json()) == plan


TEMPLATED = """
[[template]]
id = "fix"
params = { file = "x.py", level = "1" }
command = "ruff --fix {file} -l {level} ${HOME}"
verify = ["test -f {file}"]
outputs = ["{file}.log"]

[[task]]
template = "fix"
matrix = { file = ["a.py", "src/b.py"] }

[[task]]
id = "one"
template = "fix"
params = { file = "c.py", level = 2 }
depends_on = ["fix[a.py]"]
"""


def test_template_matrix_expands_in_plan_order() -> None:
    """A matrix makes one task per value (`fix[a.py]`), params fill `{name}`, unknown braces stay."""
    plan = parse_plan(TEMPLATED)
    assert [t.id for t in plan.tasks] == ["fix[a.py]", "fix[src_b.py]", "one"]
    a, b, one = plan.tasks
    assert a.command == ("sh", "-c", "ruff --fix a.py -l 1 ${HOME}")
    assert b.verify == ("test -f src/b.py",)
    assert b.outputs == ("src/b.py.log",)
    assert one.command == ("sh", "-c", "ruff --fix c.py -l 2 ${HOME}")
    assert dict(one.params) == {"file": "c.py", "level": "2"}
    assert one.depends_on == ("fix[a.py]",)
    assert a.spec_hash != b.spec_hash


def test_two_axis_matrix_without_template() -> None:
    """A matrix on a plain task is the product of its axes, in key order."""
    plan = parse_plan(
        '[[task]]\nid = "t"\ncommand = "run {py} {os}"\nmatrix = { py = ["3.11", "3.12"], os = ["a", "b"] }\n'
    )
    assert [t.id for t in plan.tasks] == ["t[3.11,a]", "t[3.11,b]", "t[3.12,a]", "t[3.12,b]"]
    assert plan.tasks[3].command[-1] == "run 3.12 b"


def chain(n: int) -> str:
    return "".join(
        f'[[task]]\nid = "t{i}"\ncommand = "true"\n' + (f'depends_on = ["t{i - 1}"]\n' if i else "")
        for i in range(n)
    )


def test_long_chain_orders_and_levels() -> None:
    """A 4,000-task chain: graphlib orders it (one task per level), no recursion limit."""
    plan = parse_plan(chain(4000))
    assert topological(plan) == [f"t{i}" for i in range(4000)]
    assert len(levels(plan)) == 4000


def test_cycle_is_named_task_by_task() -> None:
    """A cycle reads as depends_on: a -> b -> c -> a."""
    text = "".join(
        f'[[task]]\nid = "{x}"\ncommand = "true"\ndepends_on = ["{y}"]\n'
        for x, y in (("a", "b"), ("b", "c"), ("c", "a"))
    )
    with pytest.raises(PlanError) as info:
        parse_plan(text + '[[task]]\nid = "d"\ncommand = "true"\n')
    cycle = str(info.value).removeprefix("dependency cycle: ").split(" -> ")
    assert cycle[0] == cycle[-1]
    assert sorted(cycle[:-1]) == ["a", "b", "c"]
    deps = {"a": "b", "b": "c", "c": "a"}
    assert all(deps[x] == y for x, y in itertools.pairwise(cycle))


def test_no_cycle_in_a_dag() -> None:
    """find_cycle is None for a valid plan."""
    assert find_cycle(parse_plan(chain(5))) is None


def test_redundant_edges_are_notes() -> None:
    """a→c when a→b→c is reported, with the task it already goes through."""
    plan = parse_plan(
        '[[task]]\nid = "a"\ncommand = "true"\n[[task]]\nid = "b"\ncommand = "true"\ndepends_on = ["a"]\n'
        '[[task]]\nid = "c"\ncommand = "true"\ndepends_on = ["a", "b"]\n'
    )
    assert redundant_edges(plan) == [("c", "a", "b")]
    assert redundant_edges(parse_plan(chain(50))) == []


def test_priority_orders_ready_tasks() -> None:
    """Higher priority first among ready tasks, plan order among equals; the ETA follows it."""
    plan = parse_plan(
        '[[task]]\nid = "low"\ncommand = "x"\n[[task]]\nid = "high"\ncommand = "x"\npriority = 5\n'
        '[[task]]\nid = "mid"\ncommand = "x"\npriority = 1\n[[task]]\nid = "low2"\ncommand = "x"\n'
    )
    assert dispatch_order(plan) == ["high", "mid", "low", "low2"]
    assert simulate(plan, {"high": 1.0, "mid": 1.0, "low": 1.0, "low2": 1.0}, 2) == 2.0


def test_added_fields_leave_old_plans_as_stored() -> None:
    """A plan using none of the new fields stores and hashes as before (sessions replay and resume)."""
    plan = parse_plan(TASK)
    assert '"priority"' not in plan.to_json()
    assert '"base"' not in plan.to_json()
    spec = attrs.asdict(plan.tasks[0])
    for added in ("priority", "isolate", "keep_worktree", "outputs", "inputs", "cache", "params"):
        del spec[added]  # the hash as it was computed before these fields existed
    spec["env"], spec["env_names"] = [], ()
    before = hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
    assert plan.tasks[0].spec_hash == before
    old = TaskSpec(id="a", command=("sh", "-c", "true"), cwd=plan.tasks[0].cwd)
    cached = parse_plan('[[task]]\nid = "a"\ncommand = "true"\ncache = true\n')
    assert cached.tasks[0].spec_hash != old.spec_hash
    assert plan_from_json(cached.to_json()).tasks[0] == cached.tasks[0]


def test_fill_inputs_makes_paths() -> None:
    """`{inputs.dep.stdout}` and `{inputs.dep.path}` become paths under the run's outputs folder."""
    plan = parse_plan(
        '[[task]]\nid = "b"\ncommand = "x"\n[[task]]\nid = "a"\ndepends_on = ["b"]\n'
        'command = "cat {inputs.b.stdout} {inputs.b.path}/r.json"\n'
    )
    filled = fill_inputs(plan.task("a"), "/run/outputs")
    assert filled.command[-1] == "cat /run/outputs/b/stdout /run/outputs/b/r.json"


def test_eta_simulation_skips_what_is_done() -> None:
    """The ETA of a half-done chain counts only the tasks left."""
    plan = parse_plan(chain(4))
    durations = {f"t{i}": 2.0 for i in range(4)}
    assert simulate(plan, durations, 8) == 8.0
    assert simulate(plan, durations, 8, {"t0": 0.0, "t1": 0.0}) == 4.0


def test_check_shows_expansion_notes_and_strict_errors(capsule, tmp_path) -> None:
    """`agents check` lists expanded tasks and notes; a misspelt key is exit 4 with one line."""
    plan = tmp_path / "plan.toml"
    plan.write_text(TEMPLATED + '[[task]]\nid = "z"\ncommand = "x"\ndepends_on = ["one", "fix[a.py]"]\n')
    done = capsule("agents", "check", str(plan))
    assert done.returncode == 0, done.stderr
    assert "  fix[a.py]: file = 'a.py', level = '1'" in done.stdout
    assert "note: task 'z': depends_on 'fix[a.py]' is redundant (already through 'one')" in done.stdout
    plan.write_text('[run]\nparalel = 8\n[[task]]\nid = "a"\ncommand = "true"\n')
    bad = capsule("agents", "check", str(plan))
    assert bad.returncode == 4
    assert (
        bad.stderr.strip()
        == f"capsule: error: {plan}: [run]: unknown key 'paralel' (did you mean 'parallel'?)"
    )


def test_tasks_past_the_run_timeout_are_unreachable() -> None:
    """At earlier durations, a task whose dependencies end after [run] timeout never starts: reported
    once per branch, with how many tasks below it go with it; nothing without a timeout or durations."""
    text = (
        '[run]\ntimeout = "10s"\n'
        '[[task]]\nid = "slow"\ncommand = "x"\n'
        '[[task]]\nid = "after"\ncommand = "x"\ndepends_on = ["slow"]\n'
        '[[task]]\nid = "last"\ncommand = "x"\ndepends_on = ["after"]\n'
        '[[task]]\nid = "quick"\ncommand = "x"\n'
        '[[task]]\nid = "fine"\ncommand = "x"\ndepends_on = ["quick"]\n'
    )
    plan = parse_plan(text)
    known = {"slow": 12.0, "after": 1.0, "quick": 9.0}
    assert past_timeout(plan, known) == [("after", 12.0, 1)]
    assert past_timeout(plan, {"slow": 10.0}) == [("after", 10.0, 1)]  # the deadline at its start: gone
    assert past_timeout(plan, {"slow": 9.9}) == []
    assert past_timeout(plan, {}) == []
    assert past_timeout(parse_plan(text.replace('timeout = "10s"', "")), known) == []


def test_check_notes_unreachable_tasks_from_earlier_durations(capsule, tmp_path) -> None:
    """`agents check` after a run: the task behind a dependency that took longer than the run timeout
    allows is noted as unreachable (earlier durations found by spec hash)."""
    plan = tmp_path / "plan.toml"
    plan.write_text(
        '[[task]]\nid = "slow"\ncommand = "sleep 0.3"\n'
        '[[task]]\nid = "after"\ncommand = "true"\ndepends_on = ["slow"]\n'
    )
    assert capsule("agents", "run", str(plan)).returncode == 0
    plan.write_text('[run]\ntimeout = "0.2s"\n' + plan.read_text())
    done = capsule("agents", "check", str(plan))
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"note: task 'after' is unreachable: at earlier durations it starts \d+\.\ds into the run at the "
        r"earliest, past \[run\] timeout \(0\.2s\)$",
        done.stdout,
        re.MULTILINE,
    ), done.stdout
