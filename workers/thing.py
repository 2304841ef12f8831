"""The CRUD template worker role ("workers.thing"): stores any JSON object as a
versioned "thing" and serves create/get/update/delete/list. The code lives in
workers/things/ (schema, query, store, service, wire, worker, role); subclass
`ThingWorker` to give the things a field spec, as workers/book.py does.
"""

from __future__ import annotations

import sys

from workers.base import setup_logging  # noqa: F401 - the role's logging hook
from workers.things.role import entry_points
from workers.things.schema import Field, Schema, invalid
from workers.things.worker import ThingConfig, ThingWorker

ROLE = ThingWorker.role

__all__ = ["ROLE", "Field", "Schema", "ThingConfig", "ThingWorker", "invalid", "role_config", "run_role", "main"]

role_config, run_role, main = entry_points(ThingWorker)

if __name__ == "__main__":
    sys.exit(main())
