"""Turning a request's headers into a RequestContext.

``noauth``: the tenant comes from X-Tenant-Id / X-Project-Id (or, with no
tenant header, the request is an admin one, as Quantum without Keystone);
X-Roles containing ``admin`` makes it admin. ``token``: X-Auth-Token is looked
up in a tokens file (JSON: ``{"<token>": {"tenant_id": ..., "roles": [...]}}``);
unknown or missing tokens are refused with 401.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.iweb import IRequest

from server_plugin import exceptions as exc
from server_plugin.api.http import header as _header
from server_plugin.context import RequestContext
from server_plugin.validators import ValidationError, tenant_id


def _roles(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(r.strip().lower() for r in text.split(",") if r.strip())


class NoAuth:
    """Trust the identity headers (behind a trusted proxy, or for development)."""

    def context_for(self, request: IRequest) -> RequestContext:
        tenant = _header(request, "X-Tenant-Id") or _header(request, "X-Project-Id")
        roles = _roles(_header(request, "X-Roles"))
        if tenant is not None:
            try:
                tenant_id(tenant)
            except ValidationError as e:
                raise exc.InvalidInput(error_message=f"Invalid input for tenant_id. Reason: {e}") from None
        if tenant is None:
            return RequestContext(tenant_id=None, roles=roles or ("admin",), is_admin=True)
        return RequestContext(tenant_id=tenant, roles=roles, is_admin="admin" in roles)


class TokenAuth:
    """Static tokens from a file: token -> tenant and roles."""

    def __init__(self, tokens: dict[str, dict[str, Any]]) -> None:
        self._tokens = tokens

    @classmethod
    def from_file(cls, path: str) -> TokenAuth:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        tokens = data.get("tokens", data)
        if not isinstance(tokens, dict):
            raise ValueError(f"{path}: expected a JSON object of token -> {{tenant_id, roles}}")
        return cls(tokens)

    def context_for(self, request: IRequest) -> RequestContext:
        try:
            token = _header(request, "X-Auth-Token")
        except exc.HTTPBadRequest:
            raise exc.HTTPUnauthorized() from None  # a token that is not text matches none
        entry = self._tokens.get(token) if token else None
        if entry is None:
            raise exc.HTTPUnauthorized()
        roles = tuple(str(r).lower() for r in entry.get("roles", ()))
        return RequestContext(tenant_id=entry.get("tenant_id"), roles=roles, is_admin="admin" in roles)
