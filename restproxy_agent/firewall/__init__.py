"""Security groups on br-int: a pure flow compiler (``compiler``), its OpenFlow encoding (``encode``) and the
driver that keeps br-int's flows equal to what the compiler says (``driver``)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any


def _os_ken_ofproto_without_other_versions() -> None:
    """Only os-ken's OpenFlow 1.3 modules are used here, but the ``os_ken.ofproto`` package's ``__init__`` imports
    the parsers of every version (1.0 to 1.5), ~0.12 s of an agent's start, all to define ``get_ofp_module(s)``.
    The package is set up without running it; the first look-up of one of those two runs it then (and so imports
    every version, as before). Submodules (``ofproto_v1_3_parser`` ...) import as usual. Nothing is done once the
    package is imported."""
    if "os_ken.ofproto" in sys.modules:
        return
    try:
        spec = importlib.util.find_spec("os_ken.ofproto")
    except ImportError:  # (no os-ken: the modules that need it say so when imported)
        return
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    loader = spec.loader

    def __getattr__(name: str) -> Any:
        if name in ("get_ofp_modules", "get_ofp_module"):
            del module.__dict__["__getattr__"]
            loader.exec_module(module)
            return getattr(module, name)
        raise AttributeError(f"module 'os_ken.ofproto' has no attribute {name!r}")

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules["os_ken.ofproto"] = module
    sys.modules["os_ken"].ofproto = module  # type: ignore[attr-defined]  (as an import would bind it)


_os_ken_ofproto_without_other_versions()
