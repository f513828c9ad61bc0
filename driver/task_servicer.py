"""Task lifecycle RPCs of the Driver service (StartTask, WaitTask, StopTask, ...)."""


class TaskRpcs:
    """Task lifecycle RPCs; filled in by the lifecycle issue."""
