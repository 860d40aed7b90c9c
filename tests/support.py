"""Moved to ``restproxy_testing.support``; this alias keeps test modules from other branches importing (delete after merge)."""

from restproxy_testing.support import *  # noqa: F403
from restproxy_testing.support import ROOT, ServerProcess, free_port, temporary_database, wait_for  # noqa: F401
