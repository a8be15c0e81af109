"""Every table the service stores, on one metadata: what migrations compare the models with
(`alembic check`, autogenerate) and what the service's role is granted (service.data.admin).

A new resource adds its table module here; nothing else lists tables.
"""

from sqlmodel import SQLModel

import service.data.idempotency  # noqa: F401 - registers idempotency_keys
import service.tasks.table  # noqa: F401 - registers users and tasks

metadata = SQLModel.metadata
