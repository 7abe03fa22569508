"""Prometheus (prometheus-api-client): GPU utilization for idleness, cost history for reports, and
the tokens each pool generated for its $ per million tokens.

Utilization is one instant query per idle window: the PromQL in the settings returns each node's
highest GPU utilization over the window, so "under the threshold for idleTimeout" is one comparison.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

from prometheus_api_client import PrometheusApiClientException, PrometheusConnect
from requests.exceptions import RequestException

from gpucost.core.tokens import Usage
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


class CostHistory:
    """What the operator's own /metrics recorded: cost over a past period, from any Prometheus that
    scraped it (the chart's ServiceMonitor, or the tests' server)."""

    def __init__(self, url: str) -> None:
        self.client = PrometheusConnect(url=url, disable_ssl=True)

    def spent(self, metric: str, by: str, period_seconds: float) -> dict[tuple[str, ...], float]:
        """USD per label tuple over the period: the $/hour gauge integrated over a subquery at
        ``step_seconds(period)``, so workloads deleted during the period are counted too."""
        step = step_seconds(period_seconds)
        window = f"{int(period_seconds)}s:{step}s"
        query = f"sum by ({by}) (sum_over_time({metric}[{window}])) * {step} / 3600"
        labels = [label.strip() for label in by.split(",")]
        return {
            tuple(series["metric"].get(label, "") for label in labels): float(series["value"][1])
            for series in self.client.custom_query(query)
        }

    def timeline(
        self, query: str, by: str, period_seconds: float
    ) -> dict[str, list[tuple[float, float]]]:
        """``query`` summed by one label, sampled over the period (for a plot)."""
        end = datetime.now(timezone.utc)
        step = max(step_seconds(period_seconds), int(period_seconds // 500))
        result = self.client.custom_query_range(
            f"sum by ({by}) ({query})",
            start_time=end - timedelta(seconds=period_seconds),
            end_time=end,
            step=f"{step}s",
        )
        return {
            series["metric"].get(by, ""): [(float(t), float(v)) for t, v in series["values"]]
            for series in result
        }


def step_seconds(period_seconds: float) -> int:
    """Fine enough to see a short test period, coarse enough for a month (43,200 samples a
    series)."""
    return int(min(max(period_seconds / 720, 1), 60))


class PoolMetric:
    """One number from PromQL (summed over the result's series): a pool's vLLM queue depth or
    KV-cache use, or a user's query. None when Prometheus cannot answer: the decision then keeps
    the replicas as they are."""

    def __init__(self, url: str) -> None:
        self.client = PrometheusConnect(url=url, disable_ssl=True)

    def value(self, query: str) -> float | None:
        try:
            result = self.client.custom_query(query)
        except (PrometheusApiClientException, RequestException, ValueError) as e:
            log.warning("pool metric query failed (%s): %s", query, e)
            return None
        return sum(float(series["value"][1]) for series in result)


def vllm(metric: str, labels: str = "") -> str:
    """A selector for one of vLLM's metrics under either name it reaches Prometheus by: vLLM names
    them ``vllm:…``, and prometheus-client (0.22 on) escapes the colon to ``_`` for a server that
    does not ask for UTF-8 names (Prometheus 2.x)."""
    return f'{{__name__=~"vllm:{metric}|vllm_{metric}"{"," + labels if labels else ""}}}'


GATEWAY_TOKENS = "gpucost_gateway_generated_tokens_total"
VLLM_TOKENS = vllm("generation_tokens_total")
POOL_COST = 'gpucost_workload_cost_per_hour{kind="InferencePool"}'


def _by_pool(metric: str, source: str, window: str) -> str:
    inner = f"sum by (namespace, pool) (increase({metric}[{window}]))"
    return f'label_replace({inner}, "source", "{source}", "", "")'


class TokenUsage:
    """Each InferencePool's generated tokens and cost over the last ``window_seconds``. Tokens are
    the gateway's count where the gateway serves the pool, else the replicas' own vLLM counter
    (``namespace`` and ``pool`` labels, as the chart's PodMonitor relabels them). Read at most once
    per ``every_seconds`` for all pools; None when Prometheus cannot answer."""

    def __init__(self, url: str, window_seconds: float, every_seconds: float) -> None:
        self.client = PrometheusConnect(url=url, disable_ssl=True)
        self.costs = CostHistory(url)
        self.window_seconds, self.every_seconds = window_seconds, every_seconds
        self._lock = threading.Lock()
        self._at: float | None = None
        self._usage: dict[tuple[str, str], Usage] | None = None

    def usage(self, now: float) -> dict[tuple[str, str], Usage] | None:
        with self._lock:
            if self._at is None or now - self._at >= self.every_seconds:
                self._at = now
                self._usage = self._read()
            return self._usage

    def _read(self) -> dict[tuple[str, str], Usage] | None:
        window = f"{int(self.window_seconds)}s"
        query = (
            f"{_by_pool(GATEWAY_TOKENS, 'gateway', window)} or on (namespace, pool) "
            f"{_by_pool(VLLM_TOKENS, 'vllm', window)}"
        )
        try:
            tokens = self.client.custom_query(query)
            cost = self.costs.spent(POOL_COST, "namespace, name", self.window_seconds)
        except (PrometheusApiClientException, RequestException, ValueError) as e:
            log.warning("token usage query failed: %s", e)
            return None
        out = {}
        for series in tokens:
            labels = series["metric"]
            key = (labels.get("namespace", ""), labels.get("pool", ""))
            count = float(series["value"][1])
            out[key] = Usage(count, cost.get(key, 0.0), labels.get("source", ""))
        return out
