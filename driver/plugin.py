"""The plugin process's state: its config, ECS client, task store and event bus, shared by every servicer.

`Plugin` lives as long as the process: an agent that reattaches finds it configured, with its tasks.
A SetConfig applies a new `PluginConfig` here; the task store is set up on the first enabled config
and reconfigured by later ones.
"""

from __future__ import annotations

import asyncio

from driver import log
from driver.aws import EcsApi, EcsTarget
from driver.events import EventBus, TaskEvent
from driver.plugin_config import PluginConfig
from driver.store import TaskStore


class Plugin:
    """Process-wide plugin state; lives as long as the process (a reattaching agent finds it configured)."""

    def __init__(self, stopping: asyncio.Event | None = None) -> None:
        self.config: PluginConfig | None = None
        self.events = EventBus()
        self.tasks: TaskStore | None = None    # the task store; set up by on_config
        self.ecs: EcsApi | None = None
        self.config_changed = asyncio.Event()  # set (and replaced) whenever a new config is applied
        self.stopping = stopping or asyncio.Event()  # set when the host asks us to exit (GRPCController/Shutdown)

    @property
    def enabled_tasks(self) -> TaskStore | None:
        """The task store while the plugin is configured and enabled; None: the task RPCs answer "disabled"."""
        if self.config is None or not self.config.enabled:
            return None
        return self.tasks

    def apply_config(self, config: PluginConfig) -> None:
        """Keep `config` for the life of the process; rebuild the ECS client only when its target changes."""
        log.set_level(config.log_level)
        target = EcsTarget(config.cluster, config.region, config.endpoint) if config.enabled else None
        if (self.ecs.target if self.ecs else None) != target:
            # The old client is not closed: tasks tracked before the change may still be using it.
            self.ecs = EcsApi(target) if target else None
        changed = config != self.config
        self.config = config
        if changed:
            self.config_changed.set()
            self.config_changed = asyncio.Event()
        self.on_config(config)

    def on_config(self, config: PluginConfig) -> None:
        """Called after every successful SetConfig: sets up or reconfigures the task store."""
        if self.ecs is None:
            return  # disabled: the task RPCs answer "disabled"; a tracked task keeps its old client
        if self.tasks is None:
            def notify(handle, message, annotations):
                self.events.publish(TaskEvent(handle.task_id, handle.info.alloc_id, handle.info.name, message,
                                              dict(annotations)))
                log.get_logger("tasks").info(message, extra={"task_id": handle.task_id, **annotations})

            self.tasks = TaskStore(self.ecs, notify, poll_interval=config.poll_interval)
        else:
            self.tasks.reconfigure(self.ecs, config.poll_interval)

    def request_shutdown(self) -> None:
        self.stopping.set()
