"""The agent API's model: ``agent-model.json``, a botocore-format service model of the private operations
the replication agent calls (``POST /agent/<Operation>``), so that their inputs are declared and validated
exactly as MGN's are, by `rehost.api.core.model`, before any service code runs.

Shapes the file references but does not define are MGN's own (SourceServerID, TagsMap, OS,
NetworkInterfaces, DataReplicationState, the error shapes, ...), copied from botocore's ``mgn`` model with
everything they reference; the file defines only what is the agent's or stricter than MGN's (a disk's size
and a CPU's core count are required, dates are ISO-8601 timestamps with an offset).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
from botocore.model import ServiceModel

MODEL_PATH = Path(__file__).with_name("agent-model.json")
SERVICE_NAME = "mgn-agent"


def _references(shape: dict[str, Any]) -> list[str]:
    refs = [shape[k]["shape"] for k in ("member", "key", "value") if k in shape]
    return refs + [m["shape"] for m in shape.get("members", {}).values()]


def model_document() -> dict[str, Any]:
    """The agent model's JSON with the MGN shapes it references added."""
    doc: dict[str, Any] = json.loads(MODEL_PATH.read_text())
    mgn_shapes = botocore.session.get_session().get_component("data_loader").load_service_model("mgn", "service-2")["shapes"]
    shapes: dict[str, Any] = doc["shapes"]
    pending = [s for shape in shapes.values() for s in _references(shape)]
    pending += [e["shape"] for op in doc["operations"].values() for e in op.get("errors", [])]
    while pending:
        name = pending.pop()
        if name in shapes:
            continue
        if name not in mgn_shapes:
            raise KeyError(f"agent-model.json references {name}, which neither it nor MGN's model defines")
        shapes[name] = mgn_shapes[name]
        pending.extend(_references(shapes[name]))
    return doc


@cache
def agent_model() -> ServiceModel:
    return ServiceModel(model_document(), service_name=SERVICE_NAME)
