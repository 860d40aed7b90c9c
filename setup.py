"""quantum-restproxy: a Quantum REST proxy plugin server and its host agent, on Twisted."""

from setuptools import find_packages, setup

setup(
    name="quantum-restproxy",
    version="0.1.0",
    description="Quantum REST proxy plugin for Big Switch / Floodlight controllers, on Twisted",
    packages=find_packages(
        include=[
            "server_plugin",
            "server_plugin.*",
            "restproxy_agent",
            "restproxy_agent.*",
            "restproxy_dhcp",
            "restproxy_dhcp.*",
            "restproxy_common",
            "restproxy_testing",
            "controller_sim",
        ]
    )
    + ["twisted.plugins"],
    package_data={
        "server_plugin.store": ["migrations/*.py", "migrations/*.mako", "migrations/versions/*.py"],
        "twisted": ["plugins/quantum_restproxy_*.py"],
    },
    include_package_data=True,
    python_requires=">=3.11",
    install_requires=[
        "twisted[tls]>=24.7",
        "treq>=24.9",
        "attrs>=23.1",
        "sqlalchemy>=2.0",
        "alembic>=1.13",
        "netaddr>=1.0",
        "ovs>=3.1",
        "pyroute2>=0.9",
        "prometheus-client>=0.17",
        "orjson>=3.9",  # reply bodies: several times faster than json (server_plugin/api/json_codec.py)
        "os-ken>=4.2",  # OpenFlow 1.3 + Nicira extensions for the agent's security groups (ofproto parser only)
    ],
    extras_require={
        "postgresql": ["psycopg[binary]>=3.1"],
        "mysql": ["pymysql>=1.1"],
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-xdist>=3.5",
            "psycopg[binary]>=3.1",
            "pymysql>=1.1",
            "openstacksdk>=4.0",
            "python-neutronclient>=11",
            "ruff>=0.6",
        ],
    },
    entry_points={
        "console_scripts": [
            "restproxy-manage=server_plugin.manage:main",
        ],
    },
)
