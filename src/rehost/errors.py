"""The rehost error tree.

Every error a user can cause or meet is a `RehostError` subclass whose docstring is its meaning. The API
edge translates them into MGN's error shapes, the CLI into one line and an exit code, the job runner into a
job log item. Lower-level errors (OSError, sqlite3, ssl) are translated at the boundary where they are
understood and chained with ``raise ... from``.
"""

from __future__ import annotations


class RehostError(Exception):
    """A rehost operation failed."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or self.__class__.__name__).strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidInput(RehostError):
    """The request or the command line is not valid."""

    exit_code = 2


class NotFound(RehostError):
    """The resource does not exist."""

    exit_code = 3

    def __init__(self, message: str | None = None, *, resource_id: str = "", resource_type: str = "") -> None:
        super().__init__(message)
        self.resource_id = resource_id
        self.resource_type = resource_type


class Conflict(RehostError):
    """The resource is not in a state that allows the operation."""

    exit_code = 4

    def __init__(self, message: str | None = None, *, resource_id: str = "", resource_type: str = "") -> None:
        super().__init__(message)
        self.resource_id = resource_id
        self.resource_type = resource_type


class QuotaExceeded(RehostError):
    """A service quota would be exceeded."""

    exit_code = 5

    def __init__(self, message: str | None = None, *, quota_code: str = "", quota_value: int = 0) -> None:
        super().__init__(message)
        self.quota_code = quota_code
        self.quota_value = quota_value


class AccessDenied(RehostError):
    """The caller is not allowed to perform the operation."""

    exit_code = 6


class ReplicationError(RehostError):
    """Data replication failed."""


class ProtocolError(ReplicationError):
    """A peer sent a message that breaks the replication protocol."""


class SnapshotError(RehostError):
    """A snapshot could not be taken, read or verified."""


class ConversionError(RehostError):
    """A snapshot could not be made bootable on the target."""


class TargetError(RehostError):
    """The target could not launch, describe or terminate an instance."""


class StorageError(RehostError):
    """The chunk store or the database failed."""
