"""The omniops terminal console (Textual): renders the panel snapshots it is handed; no I/O."""
