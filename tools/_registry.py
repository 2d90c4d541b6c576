"""inspect-ai entry point (pyproject `[project.entry-points.inspect_ai]`): registers this project's providers.

inspect imports this module when it looks up a name it does not know (e.g. the model `prefixcache/<path>`).
Keep it light: the provider module imports torch only when a model is created.
"""

from tools import prefix_cache  # noqa: F401  (import registers the `prefixcache` model API)
