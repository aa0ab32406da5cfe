"""Test tooling for vendors: the pytest plugin and conformance checks."""
