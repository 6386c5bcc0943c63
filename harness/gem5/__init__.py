"""The gem5 backend: find the user's gem5, check dsa-llc's extension is compiled in, run the
configs of ``gem5_configs/`` and parse ``stats.txt`` into the built-in model's result keys."""
