"""`paused_gc`: the objects built while the collector was paused go to the oldest generation when it
resumes (left in the youngest, the next allocation would scan every one of them), and a cycle made
meanwhile is still collected later."""

from __future__ import annotations

import gc
import weakref

from capsule.fold.session import paused_gc


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_resuming_moves_what_was_built_to_the_oldest_generation() -> None:
    gc.collect()
    with paused_gc():
        built = [[i] for i in range(50_000)]
    assert gc.isenabled()
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert id(built[0]) in oldest
    assert id(built[-1]) in oldest


def test_a_cycle_made_while_paused_is_still_collected() -> None:
    with paused_gc():
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
    assert gone() is not None  # only a cycle holds it: refcounting alone does not free it
    gc.collect()
    assert gone() is None


def test_nested_pauses_resume_once_at_the_outermost() -> None:
    with paused_gc():
        with paused_gc():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
