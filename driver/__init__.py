"""nomad-driver-ecs: a Nomad task driver plugin for AWS ECS remote tasks, written in Python.

This package is self-contained: it imports nothing from `ecsdemo`.
"""

__version__ = "0.1.0"
