"""Shared test helpers: the plugin host harness, the moto world builder, the fake Nomad's fixtures.

Fixtures defined here are registered for the whole suite through `pytest_plugins` in tests/conftest.py;
test modules import plain helpers from here, never from another test module.
"""
