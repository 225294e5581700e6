"""Command-line entry point of the robust-guidance system (console script ``rguide``)."""
