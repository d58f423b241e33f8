"""The headless runtimes: ``serve``, the alert loop, the demo driver and the pipeline thread.

They compose the layers below (feed adapters, the store's writer, the rules) into running
processes; nothing under ``store/`` or ``rules/`` imports them.
"""
