"""The demo's scenarios (drain, lost node, client restart, task exit, endpoint outage, task-definition
update, job stop), automated and verified.

`model` holds the report types (their checks are `ecsdemo.check.Check`s), `checks` the pure rules over
Nomad/ECS snapshots, `env` what a scenario acts through, `common` the steps they share, `sampler` the ECS
task's status in the background of a wait (waits themselves are `ecsdemo.waiting`'s), one module per
scenario (`drain`, `lost_node`, `client_restart`, `task_exit`, `outage`, `update`, `stop`) and `runner` the
entry point that runs one scenario or `all` of them and returns a `Report`.
"""
