"""What the AWS side gives the Nomad side: Terraform's outputs (`Outputs`), and where they are recorded.

`ecsdemo.infra` runs Terraform and records each apply in the state directory's `infra.json` (mode, task
definition choice, the outputs, the last error). Everything else only reads that record: the renderer
takes an `Outputs`, the AWS adapter reads the cluster name from it. Keeping the type and its reading here,
below both, is what lets adapters use it without depending on the infra workflow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ecsdemo.errors import EcsdemoError
from ecsdemo.state import StateDir

INFRA_FILE = "infra.json"


@dataclass(frozen=True)
class Outputs:
    """What the AWS side gives the Nomad side (Terraform's outputs, plus where it runs)."""

    demo_subnet_id: str
    demo_security_group_id: str
    cluster_name: str
    region: str
    task_definition_family: str
    task_definition_revision: int
    task_definition_arn: str
    endpoint: str | None = None      # the local endpoint's URL in local mode, None on real AWS
    task_definition: str = "base"    # which container definitions: "base", "updated" or a file path

    @property
    def task_definition_ref(self) -> str:
        """`family:revision`, what the job's `task_definition` says."""
        return f"{self.task_definition_family}:{self.task_definition_revision}"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = INFRA_FILE) -> "Outputs":
        names = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(data, dict) or any(n not in data for n in names[:7]):
            raise EcsdemoError(f"{where} does not hold the Terraform outputs ecsdemo expects",
                               hint="run `ecsdemo infra apply` again")
        try:
            return cls(**{n: data[n] for n in names if n in data})
        except TypeError as exc:
            raise EcsdemoError(f"{where} is not valid: {exc}") from exc

    @classmethod
    def from_terraform(cls, values: dict[str, Any], endpoint: str | None, task_definition: str) -> "Outputs":
        try:
            return cls(demo_subnet_id=str(values["demo_subnet_id"]),
                       demo_security_group_id=str(values["demo_security_group_id"]),
                       cluster_name=str(values["cluster_name"]), region=str(values["region"]),
                       task_definition_family=str(values["task_definition_family"]),
                       task_definition_revision=int(values["task_definition_revision"]),
                       task_definition_arn=str(values["task_definition_arn"]),
                       endpoint=endpoint, task_definition=task_definition)
        except (KeyError, TypeError, ValueError) as exc:
            raise EcsdemoError(f"Terraform's outputs lack or garble {exc}",
                               hint="the Terraform module in the state directory may be from another ecsdemo "
                                    "version; run `ecsdemo infra destroy` and apply again") from None


def read_record(state: StateDir) -> dict[str, Any]:
    """The infra record (`infra.json`) as a dict; {} when nothing was applied. A corrupt one is named."""
    data = state.read_json(INFRA_FILE, default={})
    if not isinstance(data, dict):
        raise EcsdemoError(f"state file {state.path(INFRA_FILE)} is corrupt (not a JSON object)",
                           hint="run `ecsdemo infra destroy`, or delete that file if nothing was applied")
    return data


def recorded(state: StateDir) -> Outputs | None:
    """The outputs of the last successful apply (no terraform call); None if there are none."""
    data = read_record(state).get("outputs")
    return None if data is None else Outputs.from_json(data, where=str(state.path(INFRA_FILE)))
