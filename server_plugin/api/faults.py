"""Error bodies, one shape per API generation.

v2.0 uses Neutron's ``{"NeutronError": {"type", "message", "detail"}}``, which
python-neutronclient turns into typed exceptions; v1.1 uses
``{"QuantumError": {...}}`` with standard codes; v1.0 has its own codes (420,
430, ...) and fault names.
"""

from __future__ import annotations

from typing import Any

from server_plugin import exceptions as exc

INTERNAL_ERROR = "Request Failed: internal server error while processing your request."


def neutron_fault(error: exc.QuantumException) -> tuple[int, dict[str, Any]]:
    return error.status, {"NeutronError": {"type": error.type, "message": error.msg, "detail": ""}}


def neutron_internal_error() -> tuple[int, dict[str, Any]]:
    return 500, {"NeutronError": {"type": "HTTPInternalServerError", "message": INTERNAL_ERROR, "detail": ""}}


# v1.x: (v1.0 code, v1.0 fault name, v1.1 code, explanation)
_V1_FAULTS: dict[str, tuple[int, str, int, str]] = {
    "NetworkNotFound": (420, "networkNotFound", 404, "Unable to find a network with the specified identifier."),
    "NetworkInUse": (421, "networkInUse", 409, "Unable to remove the network: attachments still plugged."),
    "PortNotFound": (430, "portNotFound", 404, "Unable to find a port with the specified identifier."),
    "StateInvalid": (431, "requestedStateInvalid", 400, "Unable to update port state with specified value."),
    "PortInUse": (432, "portInUse", 409, "A resource is currently attached to the logical port"),
    "AlreadyAttached": (440, "alreadyAttached", 409, "The resource is already attached to another port"),
}

_V11_TYPE_NAMES = {"StateInvalid": "RequestedStateInvalid"}

_V1_GENERIC = {
    400: ("malformedRequest", "Unable to process the request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not authorized"),
    404: ("itemNotFound", "The resource could not be found."),
    405: ("badMethod", "The method is not allowed for this resource."),
    409: ("conflict", "The request conflicts with the current state."),
    413: ("overLimit", "Request is too large."),
    503: ("serviceUnavailable", "The service is unavailable"),
}


def v1_fault(error: exc.QuantumException, version: str) -> tuple[int, dict[str, Any]]:
    known = _V1_FAULTS.get(error.type)
    if version == "1.0":
        if known:
            code, name, _, explanation = known
        else:
            code = error.status
            name, explanation = _V1_GENERIC.get(code, ("quantumServiceFault", "Quantum service fault"))
        return code, {name: {"code": code, "message": explanation, "detail": error.msg}}
    if known:
        _, _, code, explanation = known
    else:
        code = error.status
        explanation = _V1_GENERIC.get(code, ("", error.msg))[1]
    # Essex's v1.1 client maps fault types to exceptions by these names.
    fault_type = _V11_TYPE_NAMES.get(error.type, error.type)
    return code, {"QuantumError": {"type": fault_type, "message": explanation, "detail": error.msg}}


def v1_internal_error(version: str) -> tuple[int, dict[str, Any]]:
    if version == "1.0":
        return 500, {"quantumServiceFault": {"code": 500, "message": INTERNAL_ERROR, "detail": ""}}
    return 500, {"QuantumError": {"type": "HTTPInternalServerError", "message": INTERNAL_ERROR, "detail": ""}}
