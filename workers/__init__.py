"""Services that run on the mesh: inference workers, the model manager, the worker
base, and the CRUD template worker."""
