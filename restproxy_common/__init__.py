"""Code that quantum-server and restproxy-agent share: TLS policy, metrics serving, the INI loader, backoff.

A compute host runs only the agent: nothing here imports ``server_plugin`` (tests/test_layering.py).
"""
