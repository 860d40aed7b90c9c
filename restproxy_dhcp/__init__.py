"""restproxy-dhcp-agent: DHCP for the networks of a quantum-restproxy deployment, with dnsmasq.

Decisions an operator should know (README, "DHCP agent"):

* **What it serves.** Every admin-up network with a DHCP-enabled subnet, listed
  from ``GET /agent/v1/dhcp/networks`` and kept in step by
  ``/agent/v1/dhcp/watch`` (events under the server's reserved key ``@dhcp``,
  written in the same transaction as the change). No polling.
* **Per network**: a ``network:dhcp`` port bound to this host (device_id
  ``dhcp<uuid5(host)>-<network id>``, as Neutron), plugged into br-int as a veth
  ``tap<port id[:11]>`` whose peer ``ns-<port id[:11]>`` lives in the namespace
  ``qdhcp-<network id>`` with the port's MAC and addresses; one dnsmasq bound to
  that interface only, static ``--dhcp-range`` per DHCPv4 subnet, hosts file
  (MAC, hostname, IP) and options file (router, DNS servers, classless routes
  incl. 169.254.169.254/32, forced MTU option 26).
* **br-int shared with the host agent.** The DHCP port's Interface carries
  ``restproxy-owner=dhcp``; the host agent neither plugs nor unplugs
  ``network:dhcp`` ports. Local VLAN tags come from one registry in
  ``Bridge.external_ids`` (``restproxy-vlan-<network id>``), claimed in a
  verified OVSDB transaction by whichever agent plugs a network's first port
  (restproxy_agent.bridge.ClaimVlan): no race between the two processes.
* **dnsmasq outlives the agent.** It runs in its own session
  (``setsid ip netns exec qdhcp-X dnsmasq --keep-in-foreground ...``, an argv
  list, no shell), stdio on /dev/null, logs to a file; its pid file is in the
  state directory. A restarted agent adopts a running dnsmasq (pid file +
  ``/proc/<pid>/cmdline`` naming that pid file), rewrites its files and sends
  SIGHUP; a dnsmasq of a network no longer served is stopped and its namespace
  and port removed. Nothing is started twice.
* **dnsmasq killed.** Its exit (for a child) or a /proc check every
  ``check_interval`` seconds (for every dnsmasq, adopted or not) restarts it:
  within ``check_interval`` + start time (about 1.5 s by default).
* **Two DHCP agents** (on two hosts) both serve every network, each with its
  own DHCP port, from the same static host entries (what Neutron does with
  ``dhcp_agents_per_network = 2``): a VM is offered the same address by either,
  so it can never get two different ones.
* **IPv6.** DHCPv6 stateful subnets (``ipv6_address_mode`` dhcpv6-stateful or
  unset) get a static range and ``[addr]`` host entries; stateless and SLAAC
  subnets are left to router advertisements (not sent here). Only DHCPv4 is
  tested end to end.
"""
