"""The commands that use both a sweep's search (`camotune.search`, Ray) and its results
(`camotune.results`): ``sweep``, ``resume``, ``demo`` and ``confirm``. They sit above both
packages, which never import each other."""
