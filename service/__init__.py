"""secure-tasks-api: a per-user task API whose only source of identity is a verified JWT."""
