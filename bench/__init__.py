"""engramdb's comparative benchmarks: one script per area, ``python -m bench`` runs them all.

Each script runs on its own as ``python bench/<name>.py`` (``_common`` is imported from the
script's directory); ``bench/render.py`` publishes their results as BENCHMARKS.md.
"""
