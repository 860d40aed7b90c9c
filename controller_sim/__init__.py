"""A controller simulator: the SDN controllers that quantum-restproxy mirrors its state to.

The REST proxy plugin pushes every network, port, router and floating IP to a pool of
external controllers (Big Switch, Floodlight) over ``/networkService/v1.1``. Tests, the demo
and the benchmarks need such controllers on demand, with their real quirks and with faults
that can be switched on at will, so this package serves that protocol on twisted.web:

- profile ``bigswitch`` (default): the full Big Switch resource set with strict body checks,
  ``/topology`` full syncs, ``/capabilities``, ``/health`` and the "lost state" behaviours;
- profile ``floodlight``: Floodlight v0.91's VirtualNetworkFilter, quirks included;
- an admin API under ``/_sim/`` to inject faults, forget state, and inspect what it saw.

Run it with ``python -m controller_sim`` or ``twistd -n restproxy-controller-sim``; tests use
:class:`controller_sim.testing.SimProcess`.
"""

BASE_PATH = "/networkService/v1.1"
ADMIN_PREFIX = "/_sim"
