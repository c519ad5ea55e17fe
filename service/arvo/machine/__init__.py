"""State machines: the XState-compatible statechart interpreter and the Arvo machine built on it."""
