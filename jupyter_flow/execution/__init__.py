"""One task: its step notebook run by papermill in a kernel, what runs inside that kernel, its files,
environments and secrets."""
