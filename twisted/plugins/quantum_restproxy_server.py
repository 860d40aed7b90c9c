"""twistd drop-in: ``twistd -n quantum-server --config etc/restproxy.ini``."""

from twisted.application.service import ServiceMaker

quantum_server = ServiceMaker(
    "quantum-server",
    "server_plugin.server_tap",
    "Quantum REST proxy server: the v2.0/v1.x API over a SQL store",
    "quantum-server",
)
