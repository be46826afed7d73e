"""What a notebook says: its cells, tags, parameters, the data flow between cells and the DAG of steps.

Pure: nothing here starts a kernel or writes to a store."""
