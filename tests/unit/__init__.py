"""Unit tests: no model, no server (`make test-unit`, under a minute)."""
