"""twistd drop-in: ``twistd -n restproxy-controller-sim --port tcp:8800:interface=127.0.0.1``."""

from twisted.application.service import ServiceMaker

restproxy_controller_sim = ServiceMaker(
    "restproxy-controller-sim",
    "controller_sim.tap",
    "Simulated Big Switch / Floodlight controller (/networkService/v1.1) with fault injection",
    "restproxy-controller-sim",
)
