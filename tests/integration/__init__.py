"""Integration tests: tiny models built on the fly and real tritonserver processes."""
