"""HTTP plumbing shared by ``api`` and ``web``: request dependencies, the session's transaction, media routes."""
