def test_critical_path_without_history_is_the_longest_chain() -> None:
    """With no earlier durations, the critical path is the chain with the most tasks."""
    from capsule.plan.dag import analyse
    from capsule.plan.spec import parse_plan

    plan = parse_plan(
        '[[task]]\nid = "a"\ncommand = "true"\n[[task]]\nid = "b"\ncommand = "true"\ndepends_on = ["a"]\n'
        '[[task]]\nid = "c"\ncommand = "true"\ndepends_on = ["b"]\n[[task]]\nid = "x"\ncommand = "true"\n',
        name="plan.toml",
    )
    assert analyse(plan, {}).critical_path == ("a", "b", "c")
