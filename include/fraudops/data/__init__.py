"""The data half of the lifecycle: generation, warehouse, validation, snapshots."""
