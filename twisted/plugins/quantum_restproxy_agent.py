"""twistd drop-in: ``twistd -n restproxy-agent --config etc/restproxy_agent.ini``."""

from restproxy_common.startup import ImportedWithoutCollector

restproxy_agent = ImportedWithoutCollector(
    "restproxy-agent",
    "restproxy_agent.agent_tap",
    "Quantum REST proxy host agent: plugs VIFs into Open vSwitch and reports them up",
    "restproxy-agent",
)
