from __future__ import annotations

import numpy as np
import pytest

from multirnn import regularizers
from multirnn.ops import NUMPY_OPS

W = np.array([[1.0, -2.0], [0.5, 0.0]])


@pytest.mark.parametrize(
    "reg,expected",
    [
        (regularizers.L1(0.1), 0.1 * 3.5),
        (regularizers.L2(0.1), 0.1 * 5.25),
        (regularizers.L1L2(0.1, 0.2), 0.1 * 3.5 + 0.2 * 5.25),
        (regularizers.resolve("l1_l2", owner="L", arg="a"), 0.01 * 3.5 + 0.01 * 5.25),
        (regularizers.resolve("l1", owner="L", arg="a"), 0.01 * 3.5),
        (regularizers.resolve("l2", owner="L", arg="a"), 0.01 * 5.25),
    ],
)
def test_penalty_values(reg, expected):
    assert regularizers.penalty(reg, W, NUMPY_OPS) == pytest.approx(expected, rel=1e-15)


def test_callable_regularizer():
    assert regularizers.penalty(lambda w: float(w.sum()), W, NUMPY_OPS) == -0.5


def test_name_and_dict_alias_mean_the_same():
    by_name = regularizers.resolve("l1_l2", owner="L", arg="a")
    by_dict = regularizers.resolve({"class_name": "l1_l2", "config": {}}, owner="L", arg="a")
    assert by_name == by_dict == regularizers.L1L2(0.01, 0.01)
    partial = regularizers.resolve(
        {"class_name": "l1_l2", "config": {"l2": 0.5}}, owner="L", arg="a"
    )
    assert partial == regularizers.L1L2(0.01, 0.5)
    assert regularizers.resolve({"class_name": "L1L2"}, owner="L", arg="a") == regularizers.L1L2()
