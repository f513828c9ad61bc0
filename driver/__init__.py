"""nomad-driver-ecs: a Nomad task driver plugin for AWS ECS remote tasks, written in Python.

This package is self-contained: it imports nothing from `ecsdemo`. One concept per module, in layers
that only import downwards (pyproject.toml's import-linter contracts check them):

* main: the executable; it hands the servicers to the transport;
* transport: go-plugin's server side (cookie, handshake line, TLS, the gRPC server);
* RPC servicers, proto <-> domain only: servicer (BasePlugin, Driver, go-plugin services), task_servicer
  (task RPCs); the generated stubs in driver/pb are imported here only;
* domain, plain Python: plugin (process state), plugin_config, fingerprint, events (task event bus),
  taskconfig (the job's config block), store (tracked tasks and their operations), handle (one task,
  its status and ownership tags), state (driver state), monitor (the one ECS polling loop);
* aws: the AWS adapter (boto3);
* under everything: declaration (what the driver is, as data: names, plugin info, config specs,
  capabilities) and log (hclog JSON lines on stderr).
"""

__version__ = "0.1.0"
