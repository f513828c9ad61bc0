"""Typer command modules: each parses options, calls a workflow or adapter, and prints the result.

`ecsdemo.cli` wires them into one app. Commands never hold logic a test would want to call without the
CLI: that lives in the workflow and adapter modules of `ecsdemo`.
"""
