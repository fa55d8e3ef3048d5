"""Pytest plugin (registered under ``pytest11``): only adds the ``--multirnn-*`` options, so
``pytest --pyargs multirnn.conformance --multirnn-engines=NAME`` works anywhere. The tests
themselves live in this package and run only when it is collected."""

from __future__ import annotations

ENV_ENGINES = "MULTIRNN_CONFORMANCE_ENGINES"


def pytest_addoption(parser):
    group = parser.getgroup("multirnn", "multirnn conformance suite")
    group.addoption("--multirnn-engines", help=f"comma-separated engines (or ${ENV_ENGINES})")
    group.addoption("--multirnn-dtypes", default="float32,float64", help="dtypes to check")
    group.addoption("--multirnn-full", action="store_true", help="add Hypothesis-generated cases")
    group.addoption(
        "--multirnn-count", type=int, default=300, help="Hypothesis cases in --multirnn-full"
    )
    group.addoption(
        "--multirnn-known-gaps", action="append", default=[], help="extra known-gap file"
    )
