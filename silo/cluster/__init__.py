"""The cluster: membership (who is alive), the grain directory (who owns a grain) and the
locator (where a call should run)."""
