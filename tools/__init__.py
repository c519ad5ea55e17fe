"""Repository tooling (not shipped in the package): documentation generators."""
