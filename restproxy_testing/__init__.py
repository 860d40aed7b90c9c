"""The project's test harness, shipped with it: real processes and sandboxes, never mocks of them.

- ``support``: throw-away databases (SQLite, PostgreSQL, MariaDB) and a real ``quantum-server`` process.
- ``ovs_sandbox``: a private Open vSwitch (ovsdb-server + ovs-vswitchd) and network namespaces as VMs;
  it needs an installed Open vSwitch and says so clearly when there is none (it installs nothing).
- ``agent_stack``: a real ``restproxy-agent`` process, and a server + agent stack on a sandbox.
- ``channel_support``: agent-channel helpers (raw events, raw watch sockets, process CPU and memory).
- ``tcp_proxy``: a loopback TCP proxy that plays network faults (refuse, black-hole).

The test suite (``tests/``), ``scripts/demo.py`` and ``bench/`` use it; the product
(``server_plugin``, ``restproxy_agent``, ``restproxy_common``, ``controller_sim``) never
imports it (tests/test_layering.py). Installing Open vSwitch is the bootstrap's job
(``scripts/bootstrap.sh``) or the test suite's (``tests/ovs_sandbox.py``), not this package's.
"""
