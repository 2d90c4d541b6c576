"""The neutral bottom layer: typed handoffs, settings, the workspace, errors and small shared helpers.

Nothing here imports another package of this project, and nothing here imports a heavy library at module level, so
every layer above can import it freely and `python -m graph.run --help` stays instant.
"""
