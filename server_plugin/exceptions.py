"""Quantum exceptions: each carries its HTTP status and a message template.

The class name is what clients see as ``NeutronError.type`` (python-neutronclient
maps it to ``<type>Client`` exceptions), so names follow Quantum/Neutron exactly.
"""

from __future__ import annotations

from typing import Any


class QuantumException(Exception):
    """Base of every error the plugin raises on purpose."""

    status = 500
    message = "An unknown exception occurred."

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        try:
            self.msg = self.message % kwargs
        except (KeyError, TypeError):
            self.msg = self.message
        super().__init__(self.msg)

    @property
    def type(self) -> str:
        return type(self).__name__


class BadRequest(QuantumException):
    status = 400
    message = "Bad %(resource)s request: %(msg)s"


class NotAuthorized(QuantumException):
    status = 403
    message = "Not authorized."


class PolicyNotAuthorized(NotAuthorized):
    message = "Policy doesn't allow %(action)s to be performed."


class NotFound(QuantumException):
    status = 404
    message = "An unknown exception occurred."


class Conflict(QuantumException):
    status = 409
    message = "An unknown exception occurred."


class InUse(QuantumException):
    status = 409
    message = "The resource is inuse"


class ServiceUnavailable(QuantumException):
    status = 503
    message = "The service is unavailable"


class NotAuthenticated(QuantumException):
    status = 401
    message = "Authentication required"


# -- HTTP-level errors (Neutron reports these with type HTTPBadRequest etc.) ----


class HTTPBadRequest(QuantumException):
    status = 400
    message = "%(detail)s"


class HTTPNotFound(QuantumException):
    status = 404
    message = "The resource could not be found."


class HTTPMethodNotAllowed(QuantumException):
    status = 405
    message = "The method %(method)s is not allowed for this resource."


class HTTPRequestEntityTooLarge(QuantumException):
    status = 413
    message = "Request is too large."


class HTTPUnauthorized(QuantumException):
    status = 401
    message = "Authentication required"


class HTTPUnsupportedMediaType(QuantumException):
    status = 415
    message = "Unsupported Content-Type"


# -- Core resources ----------------------------------------------------------


class NetworkNotFound(NotFound):
    message = "Network %(net_id)s could not be found"


class SubnetNotFound(NotFound):
    message = "Subnet %(subnet_id)s could not be found"


class PortNotFound(NotFound):
    message = "Port %(port_id)s could not be found"


class PortNotFoundOnNetwork(PortNotFound):
    message = "Port %(port_id)s could not be found on network %(net_id)s"

    @property
    def type(self) -> str:
        return "PortNotFound"


class NetworkInUse(InUse):
    message = "Unable to complete operation on network %(net_id)s. There are one or more ports still in use on the network."


class SubnetInUse(InUse):
    message = "Unable to complete operation on subnet %(subnet_id)s. One or more ports have an IP allocation from this subnet."


class PortInUse(InUse):
    message = "Unable to complete operation on port %(port_id)s for network %(net_id)s. Port already has an attached device %(device_id)s."


class AlreadyAttached(Conflict):
    message = (
        "Unable to plug the attachment %(att_id)s into port %(port_id)s for network "
        "%(net_id)s. The attachment is already plugged into port %(att_port_id)s"
    )


class MacAddressInUse(InUse):
    message = "Unable to complete operation for network %(net_id)s. The mac address %(mac)s is in use."


class IpAddressInUse(InUse):
    message = "Unable to complete operation for network %(net_id)s. The IP address %(ip_address)s is in use."


class IpAddressGenerationFailure(Conflict):
    message = "No more IP addresses available on network %(net_id)s."


class MacAddressGenerationFailure(ServiceUnavailable):
    message = "Unable to generate unique mac on network %(net_id)s."


class InvalidInput(BadRequest):
    message = "Invalid input for operation: %(error_message)s."


class InvalidAllocationPool(BadRequest):
    message = "The allocation pool %(pool)s is not valid."


class OutOfBoundsAllocationPool(BadRequest):
    message = "The allocation pool %(pool)s spans beyond the subnet cidr %(subnet_cidr)s."


class OverlappingAllocationPools(Conflict):
    message = "Found overlapping allocation pools: %(pool_1)s %(pool_2)s for subnet %(subnet_cidr)s."


class GatewayConflictWithAllocationPools(InUse):
    message = "Gateway ip %(ip_address)s conflicts with allocation pool %(pool)s"


class HostRoutesExhausted(BadRequest):
    message = "Unable to complete operation for %(subnet_id)s. The number of host routes exceeds the limit %(quota)s."


class DNSNameServersExhausted(BadRequest):
    message = "Unable to complete operation for %(subnet_id)s. The number of DNS nameservers exceeds the limit %(quota)s."


class StateInvalid(BadRequest):
    message = "Unsupported port state: %(port_state)s"


class InvalidSharedSetting(Conflict):
    message = "Unable to reconfigure sharing settings for network %(network)s. Multiple tenants are using it"


class MarkerNotFound(NotFound):
    message = "Marker %(marker)s could not be found"


# -- l3: routers and floating IPs (quantum/extensions/l3.py; messages as Quantum/Neutron) ------------


class RouterNotFound(NotFound):
    message = "Router %(router_id)s could not be found"


class RouterInUse(InUse):
    message = "Router %(router_id)s still has active ports"


class RouterInterfaceNotFound(NotFound):
    message = "Router %(router_id)s does not have an interface with id %(port_id)s"


class RouterInterfaceNotFoundForSubnet(NotFound):
    message = "Router %(router_id)s has no interface on subnet %(subnet_id)s"


class RouterInterfaceInUseByFloatingIP(InUse):
    message = (
        "Router interface for subnet %(subnet_id)s on router %(router_id)s cannot be deleted, "
        "as it is required by one or more floating IPs."
    )


class FloatingIPNotFound(NotFound):
    message = "Floating IP %(floatingip_id)s could not be found"


class ExternalGatewayForFloatingIPNotFound(NotFound):
    message = (
        "External network %(external_network_id)s is not reachable from subnet %(subnet_id)s.  "
        "Therefore, cannot associate Port %(port_id)s with a Floating IP."
    )


class FloatingIPPortAlreadyAssociated(InUse):
    message = (
        "Cannot associate floating IP %(floating_ip_address)s (%(fip_id)s) with port %(port_id)s using fixed IP "
        "%(fixed_ip)s, as that fixed IP already has a floating IP on external network %(net_id)s."
    )


class L3PortInUse(InUse):
    message = "Port %(port_id)s has owner %(device_owner)s and therefore cannot be deleted directly via the port API."


class RouterExternalGatewayInUseByFloatingIp(InUse):
    message = (
        "Gateway cannot be updated for router %(router_id)s, since a gateway to external network %(net_id)s "
        "is required by one or more floating IPs."
    )


class ExternalNetworkInUse(InUse):
    message = "External network %(net_id)s cannot be updated to be made non-external, since it has existing gateway ports"


class SubnetMismatchForPort(Conflict):
    message = "Subnet on port %(port_id)s does not match the requested subnet %(subnet_id)s"


class ExternalIpAddressExhausted(BadRequest):
    message = "Unable to find any IP address on external network %(net_id)s."


class GatewayIpInUse(InUse):
    message = "Current gateway ip %(ip_address)s already in use by port %(port_id)s. Unable to update."


class FixedIpInUseByFloatingIP(InUse):
    message = "Fixed IP %(ip_address)s of port %(port_id)s is in use by floating IP %(floatingip_id)s; disassociate it first."


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached or did not answer in time (503; the store logs it once per outage)."""

    message = "The database is unavailable: %(reason)s"
    logged = True  # the store has logged the outage: the API must not log it again per request

    @property
    def type(self) -> str:
        return "ServiceUnavailable"  # what clients know (neutronclient's ServiceUnavailable)


# -- security groups, port security, allowed address pairs (neutron/extensions/securitygroup.py, neutron-lib) ----


class SecurityGroupNotFound(NotFound):
    message = "Security group %(id)s does not exist"


class SecurityGroupRuleNotFound(NotFound):
    message = "Security group rule %(id)s does not exist"


class SecurityGroupInUse(InUse):
    message = "Security Group %(id)s in use."


class SecurityGroupCannotRemoveDefault(InUse):
    message = "Insufficient rights for removing default security group."


class SecurityGroupCannotUpdateDefault(InUse):
    message = "Updating default security group not allowed."


class SecurityGroupDefaultAlreadyExists(InUse):
    message = "Default security group already exists."


class SecurityGroupRuleExists(InUse):
    message = "Security group rule already exists. Rule id is %(rule_id)s."


class DuplicateSecurityGroupRuleInPost(InUse):
    message = "Duplicate Security Group Rule in POST."


class SecurityGroupRulesNotSingleTenant(InvalidInput):
    message = "Multiple tenant_ids in bulk security group rule create not allowed"


class SecurityGroupInvalidPortRange(InvalidInput):
    message = "For TCP/UDP protocols, port_range_min must be <= port_range_max"


class SecurityGroupInvalidPortValue(InvalidInput):
    message = "Invalid value for port %(port)s"


class SecurityGroupInvalidIcmpValue(InvalidInput):
    message = "Invalid value for ICMP %(field)s (%(attr)s) %(value)s. It must be 0 to 255."


class SecurityGroupMissingIcmpType(InvalidInput):
    message = "ICMP code (port-range-max) %(value)s is provided but ICMP type (port-range-min) is missing."


class SecurityGroupInvalidProtocolForPort(InvalidInput):
    message = "Ports cannot be specified for protocol %(protocol)s. Port range is only supported for %(valid_port_protocols)s."


class SecurityGroupProtocolRequiredWithPorts(InvalidInput):
    message = "Must also specify protocol if port range is given."


class SecurityGroupRuleInvalidProtocol(InvalidInput):
    message = (
        "Security group rule protocol %(protocol)s not supported. Only protocol values %(values)s and their integer "
        "representation (0 to 255) are supported."
    )


class SecurityGroupRuleInvalidEtherType(InvalidInput):
    message = "Security group rule for ethertype '%(ethertype)s' not supported. Allowed values are %(values)s."


class SecurityGroupRuleInvalidDirection(InvalidInput):
    message = "Security group rule for direction '%(direction)s' not supported. Allowed values are %(values)s."


class SecurityGroupRemoteGroupAndRemoteIpPrefix(InvalidInput):
    message = "Only remote_ip_prefix or remote_group_id may be provided."


class SecurityGroupRuleParameterConflict(InvalidInput):
    message = "Conflicting value ethertype %(ethertype)s for CIDR %(cidr)s"


class SecurityGroupEthertypeConflictWithProtocol(InvalidInput):
    message = "Invalid ethertype %(ethertype)s for protocol %(protocol)s."


class PortSecurityPortHasSecurityGroup(InUse):
    message = "Port has security group associated. Cannot disable port security or IP address until security group is removed."


class PortSecurityAndIPRequiredForSecurityGroups(InvalidInput):
    message = "Port security must be enabled and port must have an IP address in order to use security groups."


class AllowedAddressPairsMissingIP(InvalidInput):
    message = "AllowedAddressPair must contain ip_address"


class AddressPairAndPortSecurityRequired(Conflict):
    message = "Port Security must be enabled in order to have allowed address pairs on a port."


class DuplicateAddressPairInRequest(InvalidInput):
    message = "Request contains duplicate address pair: mac_address %(mac_address)s ip_address %(ip_address)s."


class AllowedAddressPairExhausted(BadRequest):
    message = "The number of allowed address pair exceeds the maximum %(quota)s."
