"""The omniops terminal console (Textual): renders panel snapshots it is handed; no I/O of its own."""
