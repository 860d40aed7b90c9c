"""Who is asking: the tenant and roles of one API request."""

from __future__ import annotations

import attrs


@attrs.frozen
class RequestContext:
    """A request's identity.

    ``tenant_id`` is None for an admin without a tenant (noauth without
    headers, as Quantum behaves without Keystone); such a context must name
    ``tenant_id`` in every create.
    """

    tenant_id: str | None
    roles: tuple[str, ...] = ()
    is_admin: bool = False
    user_id: str | None = None  # Keystone's user id (auth_strategy = keystone); None otherwise

    @classmethod
    def admin(cls) -> RequestContext:
        return cls(tenant_id=None, roles=("admin",), is_admin=True)

    def can_see_tenant(self, tenant_id: str | None) -> bool:
        return self.is_admin or tenant_id == self.tenant_id
