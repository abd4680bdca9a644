"""Readers of the collector's query API: one client (with its client config), views as plain
dataclasses, and their plain-text and JSON formatting. ``gpuwarden status``, ``gpuwarden
audit``, the demo, the dashboard and jobstats all read the cluster through this package."""

from gpuwarden.query.client import QueryClient
from gpuwarden.query.config import ClientConfig, load_client_config
from gpuwarden.query.views import ClusterView, GpuUse, GpuView, NodeView, cluster_view

__all__ = [
    "ClientConfig",
    "ClusterView",
    "GpuUse",
    "GpuView",
    "NodeView",
    "QueryClient",
    "cluster_view",
    "load_client_config",
]
