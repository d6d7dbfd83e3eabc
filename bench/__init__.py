"""The benchmark suite: the gateway against a naive Python app and nchan.

Run it with ``scripts/bench`` (or ``.venv/bin/python -m bench``); it writes
``bench/RESULTS.md`` and ``bench/results.json``.
"""
