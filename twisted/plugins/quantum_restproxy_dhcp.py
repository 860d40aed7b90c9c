"""twistd drop-in: ``twistd -n restproxy-dhcp-agent --config etc/restproxy_dhcp_agent.ini``."""

from restproxy_common.startup import ImportedWithoutCollector

restproxy_dhcp_agent = ImportedWithoutCollector(
    "restproxy-dhcp-agent",
    "restproxy_dhcp.tap",
    "Quantum REST proxy DHCP agent: one dnsmasq per network with DHCP, in a qdhcp- namespace on br-int",
    "restproxy-dhcp-agent",
)
