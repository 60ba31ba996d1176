"""kubefiles: ConfigMaps and Secrets selected by label, written to a folder.

The program is in `program`, the Kubernetes API client in `kubeapi`, the
folder's atomic writes and manifest in `writer`.
"""

from .program import KubeFiles, main

__all__ = ["KubeFiles", "main"]
