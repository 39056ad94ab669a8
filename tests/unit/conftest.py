"""The unit tier: no model is built here. A unit test that asks for the tiny model fails at once; such a test
belongs in tests/integration/."""

import pytest


@pytest.fixture(scope="session")
def tiny_demo():
    pytest.fail("a unit test asked for the tiny model build: move it to tests/integration/")
