"""The demo's scenarios (drain, lost node, client restart, task exit, endpoint outage, task-definition
update, job stop), automated and verified.

`model` holds the report types, `checks` the pure rules over Nomad/ECS snapshots, `waits` the timed
waits, `env` what a scenario acts through, `flows` the scenarios themselves and `runner` the entry point
that runs one scenario or `all` of them and returns a `Report`.
"""
