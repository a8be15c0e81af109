"""Which database roles may serve requests: only roles that row-level security binds.

Checked by `tasks-api serve` before it starts, and again on every new pooled connection, for
apps started by other means.
"""

# What the service's role may not be: row-level security does not bind it. On Neon, roles made
# in the Console, CLI or API belong to neon_superuser, which bypasses RLS as well.
ROLE_QUERY = (
    "SELECT current_user AS role, rolsuper AS superuser, rolbypassrls AS bypassrls, "
    "EXISTS (SELECT 1 FROM pg_roles AS neon WHERE neon.rolname = 'neon_superuser' "
    "AND pg_has_role(current_user, neon.oid, 'MEMBER')) AS neon_superuser "
    "FROM pg_roles WHERE rolname = current_user"
)


class RoleBypassesRowSecurity(Exception):
    """The service's database role is not bound by row-level security."""


def rls_bypass_problem(role: str, superuser: bool, bypassrls: bool, neon_superuser: bool) -> str:
    """Why `role` must not serve requests, or "" when it may."""
    if superuser:
        what = "is a superuser"
    elif bypassrls:
        what = "has BYPASSRLS"
    elif neon_superuser:
        what = "is a member of neon_superuser (every role made in Neon's Console, CLI or API is)"
    else:
        return ""
    return (
        f"the database role {role!r} {what}, so row-level security does not bind it. Connect "
        "with a role created by SQL with NOSUPERUSER NOBYPASSRLS and only SELECT, INSERT, "
        "UPDATE, DELETE on the service's tables (docs/DEPLOY.md, 'Least privilege'), or set "
        "DB_ALLOW_RLS_BYPASS=1 to run anyway"
    )
