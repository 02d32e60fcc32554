"""The MGN operations. Methods are named after the operations and take the model's member names.

Each method runs in one database transaction and returns an MGN-shaped dict; the API edge serializes it.
Side effects outside the database (launching jobs, commands to agents, replication servers) go through
the `Hooks` the control plane gives the service, after the transaction has committed.

`MgnService` is composed of one mixin per resource group, each in its own module, as moto composes a
large backend (`rehost.api.mgn.base` declares what they share).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rehost.api.mgn.applications import ApplicationOps
from rehost.api.mgn.base import Account, Hooks
from rehost.api.mgn.configuration import ConfigurationOps
from rehost.api.mgn.imports import ImportExportOps
from rehost.api.mgn.jobs import JobOps
from rehost.api.mgn.lifecycle import LifecycleOps
from rehost.api.mgn.replication import ReplicationOps
from rehost.api.mgn.servers import ServerOps
from rehost.api.mgn.tagging import TagOps
from rehost.api.mgn.templates import TemplateOps
from rehost.api.mgn.waves import WaveOps
from rehost.config import Settings
from rehost.db.store import Store
from rehost.objectstore import ObjectStore

__all__ = ["Account", "Hooks", "MgnService"]


@dataclass
class MgnService(TemplateOps, ServerOps, LifecycleOps, ReplicationOps, ConfigurationOps, JobOps, TagOps,
                 ApplicationOps, WaveOps, ImportExportOps):
    """MGN's operations, one mixin per resource group."""

    store: Store
    settings: Settings
    account: Account
    hooks: Hooks = field(default_factory=Hooks)
    objects: ObjectStore | None = None
