"""The CRUD template ("things"): a worker that stores JSON documents in SQLite.

schema.py   Field specs and document validation (errors name the field)
query.py    `list` requests: filters, ordering, offset/cursor pages -> SQL
store.py    ThingStore: one SQLite table (WAL), versioned atomic writes
service.py  ThingService: the CRUD verbs on plain dicts, store on its own thread
wire.py     one handler for msgpack and JSON-text (hp-svc-facs-net) callers
worker.py   ThingWorker/ThingConfig on the worker base: methods, topic, lifecycle
role.py     role entry points (role_config, run_role, main) for mesh.node
"""
