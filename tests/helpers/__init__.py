"""Plain modules the tests share (fixtures are in the conftest.py files): imported as
`from tests.helpers.x import ...`, never from a test module."""
