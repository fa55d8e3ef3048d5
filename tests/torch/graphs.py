"""What an autograd graph is made of, for tests that guard its shape."""

from __future__ import annotations

from collections import Counter


def node_counts(tensor) -> Counter:
    """How many nodes of each kind (``"SelectBackward0"``, ...) produce ``tensor``."""
    counts: Counter = Counter()
    seen, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        counts[type(node).__name__] += 1
        todo.extend(parent for parent, _ in node.next_functions)
    return counts
