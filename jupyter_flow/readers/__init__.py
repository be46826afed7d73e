"""Read runs back from a store: the client objects, their text and HTML drawings, loading a task's
state into a kernel, the papermill-style output notebook.

Readers never import the runtime."""
