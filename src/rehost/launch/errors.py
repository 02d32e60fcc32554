"""EC2's error codes, carried by rehost errors so the EC2 edge answers them and other callers still see the
usual tree (`NotFound`, `InvalidInput`, `Conflict`)."""

from __future__ import annotations

from rehost.errors import Conflict, InvalidInput, NotFound


class Ec2NotFound(NotFound):
    """An EC2 resource does not exist; ``code`` is EC2's (InvalidInstanceID.NotFound, ...)."""

    def __init__(self, code: str, message: str, resource_id: str, resource_type: str) -> None:
        super().__init__(message, resource_id=resource_id, resource_type=resource_type)
        self.code = code


class Ec2InvalidInput(InvalidInput):
    """A request to the EC2 subset is not valid; ``code`` is EC2's (InvalidParameterValue, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Ec2Conflict(Conflict):
    """The EC2 resource's state does not allow the operation (IncorrectInstanceState, ...)."""

    def __init__(self, code: str, message: str, resource_id: str = "") -> None:
        super().__init__(message, resource_id=resource_id)
        self.code = code


def template_not_found(template_id: str) -> Ec2NotFound:
    return Ec2NotFound("InvalidLaunchTemplateId.NotFound",
                       f"The specified launch template, with template ID {template_id}, does not exist.",
                       template_id, "launch-template")


def template_name_not_found(name: str) -> Ec2NotFound:
    return Ec2NotFound("InvalidLaunchTemplateName.NotFoundException",
                       f"The specified launch template, with template name {name}, does not exist.",
                       name, "launch-template")


def template_malformed(template_id: str) -> Ec2InvalidInput:
    return Ec2InvalidInput("InvalidLaunchTemplateId.Malformed",
                           f"The specified ID ({template_id}) is not valid. Specify a valid launch template ID.")


def version_not_found(template_id: str, version: str) -> Ec2NotFound:
    return Ec2NotFound("InvalidLaunchTemplateId.VersionNotFound",
                       f"Could not find launch template version {version} for launch template {template_id}.",
                       template_id, "launch-template")


def instance_not_found(instance_id: str) -> Ec2NotFound:
    return Ec2NotFound("InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist",
                       instance_id, "instance")


def instance_malformed(instance_id: str) -> Ec2InvalidInput:
    return Ec2InvalidInput("InvalidInstanceID.Malformed", f'Invalid id: "{instance_id}"')


def invalid_value(parameter: str, value: object, why: str = "") -> Ec2InvalidInput:
    message = f"Value ({value}) for parameter {parameter} is invalid."
    return Ec2InvalidInput("InvalidParameterValue", f"{message} {why}".strip())


def missing(parameter: str) -> Ec2InvalidInput:
    return Ec2InvalidInput("MissingParameter", f"The request must contain the parameter {parameter}")
