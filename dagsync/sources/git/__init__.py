"""The git source, with GitPython as its git layer.

Modules: ``source`` (GitSource: resolve, fetch, write the tree), ``cache`` (the bare cache
repository), ``command`` (running git through GitPython), ``batch`` (streaming blob contents),
``auth`` (credentials for git and ssh), ``urls`` (URL forms). GitPython is imported by these
modules only, which load when ``--source git`` is used.
"""

from dagsync.sources.git.source import GitSource

__all__ = ["GitSource"]
