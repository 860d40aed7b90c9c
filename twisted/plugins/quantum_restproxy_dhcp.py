"""twistd drop-in: ``twistd -n restproxy-dhcp-agent --config etc/restproxy_dhcp_agent.ini``."""

from twisted.application.service import ServiceMaker

restproxy_dhcp_agent = ServiceMaker(
    "restproxy-dhcp-agent",
    "restproxy_dhcp.tap",
    "Quantum REST proxy DHCP agent: one dnsmasq per network with DHCP, in a qdhcp- namespace on br-int",
    "restproxy-dhcp-agent",
)
