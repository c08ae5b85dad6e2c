"""The tests (see tests/conftest.py for their kinds)."""

import pytest

# The helpers' asserts explain a failure as a test's own do: registered before any of them is imported.
pytest.register_assert_rewrite("tests.helpers")
