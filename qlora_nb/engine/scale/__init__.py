"""More than one process: what each rank needs (sharded loading, a shared stop, events on disk) and the launcher."""
