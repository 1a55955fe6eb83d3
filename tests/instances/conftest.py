"""The Bytez simulator and clock fixtures of test_instances, for the other
modules of this directory."""

from __future__ import annotations

from tests.instances.test_instances import bytez, clock, running_sim, sim  # noqa: F401
