"""Conformance properties: Hypothesis strategies and checks that take the
implementation under test as an argument. See ``properties.core``."""
