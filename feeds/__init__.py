"""Feed adapters and the canonical event model: everything that brings data in."""
