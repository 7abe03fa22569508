"""GPU utilization from Prometheus (prometheus-api-client): DCGM exporter's or the node agent's.

One instant query per idle window: the PromQL in the settings returns each node's highest GPU
utilization over the window, so "under the threshold for idleTimeout" is one comparison.
"""

from __future__ import annotations

import logging

from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from requests.exceptions import RequestException

from gpucost.settings import Utilization

log = logging.getLogger(__name__)


class UtilizationSource:
    def __init__(self, settings: Utilization) -> None:
        assert settings.prometheus_url
        self.settings = settings
        self.client = PrometheusConnect(url=settings.prometheus_url, disable_ssl=True)

    def peak_percent(self, window_seconds: float) -> dict[str, float] | None:
        """Node → highest GPU utilization (%) over the window; None when Prometheus can't answer
        (the autoscaler then decides on allocation alone, never on a guess)."""
        query = self.settings.query.format(window=f"{max(int(window_seconds), 1)}s")
        try:
            result = self.client.custom_query(query)
        except (PrometheusApiClientException, RequestException, ValueError) as e:
            log.warning("GPU utilization query failed (%s): %s", query, e)
            return None
        out: dict[str, float] = {}
        for series in result:
            node = series.get("metric", {}).get(self.settings.node_label)
            if node:
                out[node] = max(out.get(node, 0.0), float(series["value"][1]))
        return out
