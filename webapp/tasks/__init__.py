"""Programs that run as tasks, in a Job's container or under the legacy runner."""
