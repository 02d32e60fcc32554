"""AWS error shapes at the API edge, and the one place that maps rehost errors onto them."""

from __future__ import annotations

from typing import Any

from rehost import errors


class AwsError(Exception):
    """An error answered to an AWS client: its code, HTTP status, message and modelled extra fields."""

    def __init__(self, error_code: str, message: str, status: int = 400, **fields: Any) -> None:
        super().__init__(message)
        self.code = error_code
        self.message = message
        self.status = status
        self.fields = {k: v for k, v in fields.items() if v is not None}


def validation_error(message: str, *, reason: str = "fieldValidationFailed", fields: list[dict[str, str]] | None = None) -> AwsError:
    return AwsError("ValidationException", message, 400, code="ValidationException", reason=reason, fieldList=fields or None)


def uninitialized() -> AwsError:
    return AwsError(
        "UninitializedAccountException",
        "Account not initialized. Call InitializeService before using Application Migration Service.",
        400,
        code="UninitializedAccountException",
    )


def access_denied(message: str) -> AwsError:
    return AwsError("AccessDeniedException", message, 403, code="AccessDeniedException")


def not_implemented(operation: str) -> AwsError:
    return validation_error(
        f"Operation {operation} is not implemented by rehost.", reason="unknownOperation"
    )


def out_of_scope(operation: str, reason: str) -> AwsError:
    return validation_error(f"{operation} is outside rehost's scope: {reason}", reason="other")


def from_rehost_error(exc: errors.RehostError) -> AwsError:
    """Translate the rehost error tree into MGN's error shapes."""
    if isinstance(exc, errors.NotFound):
        return AwsError(
            "ResourceNotFoundException", exc.message, 404, code="ResourceNotFoundException",
            resourceId=exc.resource_id or None, resourceType=exc.resource_type or None,
        )
    if isinstance(exc, errors.Conflict):
        return AwsError(
            "ConflictException", exc.message, 409, code="ConflictException",
            resourceId=exc.resource_id or None, resourceType=exc.resource_type or None,
        )
    if isinstance(exc, errors.QuotaExceeded):
        return AwsError(
            "ServiceQuotaExceededException", exc.message, 402, code="ServiceQuotaExceededException",
            serviceCode="mgn", quotaCode=exc.quota_code or None, quotaValue=exc.quota_value or None,
        )
    if isinstance(exc, errors.AccessDenied):
        return access_denied(exc.message)
    if isinstance(exc, errors.InvalidInput):
        return validation_error(exc.message, reason="other")
    return AwsError("InternalServerException", exc.message, 500, code="InternalServerException")
