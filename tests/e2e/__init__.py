"""End-to-end tests: the ``arvo`` console script run as a user runs it."""
