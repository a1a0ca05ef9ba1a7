"""The order every view of a process tree shares: depth first from the roots, siblings by start
(the HTML timeline and tree, the Perfetto tracks, MCP's get_process_tree)."""

from __future__ import annotations

from capsule.fold.process_tree import ProcessNode
from capsule.fold.session import SessionState


def tree_order(state: SessionState) -> list[tuple[ProcessNode, int]]:
    """Every process with its depth, depth-first from the roots, siblings by start.

    A node whose parent is missing is a root. Iterative: a fork bomb nests thousands deep.
    """
    nodes = state.tree.nodes
    roots = sorted((n for n in nodes if n.parent is None), key=lambda n: (n.start, n.key))
    out: list[tuple[ProcessNode, int]] = []
    stack: list[tuple[ProcessNode, int]] = [(n, 0) for n in reversed(roots)]
    while stack:
        node, depth = stack.pop()
        out.append((node, depth))
        children = sorted((nodes[k] for k in node.children), key=lambda n: (n.start, n.key))
        stack.extend((c, depth + 1) for c in reversed(children))
    return out
