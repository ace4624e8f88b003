"""/metrics: gauges computed at scrape time from the same selectors as the operations page.

With Redis down the scrape still answers: leadflow_redis_up 0, no queue samples, and every series
read from the database as usual."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core import ops


class LeadflowCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        redis = ops.redis_snapshot()
        yield GaugeMetricFamily("leadflow_redis_up", "1 when Redis answered this scrape; 0: no queue series",
                                value=int(redis.up))
        yield from self._redis_series(redis)
        yield from self._database_series()

    def _redis_series(self, redis: ops.RedisSnapshot) -> Iterator[Metric]:
        """Queues, job throughput, workers: without Redis, no sample (an absent series, not a false 0)."""
        depth = GaugeMetricFamily("leadflow_queue_depth", "Jobs waiting", labels=["queue"])
        age = GaugeMetricFamily("leadflow_queue_oldest_job_age_seconds", "Age of the oldest waiting job",
                                labels=["queue"])
        failed = GaugeMetricFamily("leadflow_queue_failed_jobs", "Jobs in the failed registry (dead letters)",
                                   labels=["queue"])
        running = GaugeMetricFamily("leadflow_queue_running_jobs", "Jobs running", labels=["queue"])
        for q in redis.queues:
            depth.add_metric([q.name], q.depth)
            age.add_metric([q.name], q.oldest_age or 0.0)
            failed.add_metric([q.name], q.failed)
            running.add_metric([q.name], q.running)
        yield from (depth, age, failed, running)
        done = GaugeMetricFamily("leadflow_queue_jobs_finished_last_hour", "Jobs finished in the last 60 minutes",
                                 labels=["queue"])
        lost = GaugeMetricFamily("leadflow_queue_jobs_failed_last_hour",
                                 "Job attempts failed in the last 60 minutes (retried ones included)", labels=["queue"])
        for t in redis.throughput:
            done.add_metric([t.name], t.finished)
            lost.add_metric([t.name], t.failed)
        yield from (done, lost)
        workers = GaugeMetricFamily("leadflow_workers", "RQ workers registered")
        if redis.up:
            workers.add_metric([], redis.workers)
        yield workers

    def _database_series(self) -> Iterator[Metric]:
        delivery = ops.delivery_stats()
        messages = GaugeMetricFamily("leadflow_messages", "Outbox messages by status", labels=["status"])
        for status, n in sorted(delivery.by_status.items()):
            messages.add_metric([status], n)
        yield messages
        yield GaugeMetricFamily("leadflow_messages_stuck", "Messages past their deadline", value=delivery.stuck)
        yield GaugeMetricFamily("leadflow_messages_sent_last_hour", "Messages sent in the last hour",
                                value=delivery.sent_last_hour)
        yield GaugeMetricFamily("leadflow_messages_failed_last_hour", "Messages failed in the last hour",
                                value=delivery.failed_last_hour)

        crm = ops.crm_stats()
        items = GaugeMetricFamily("leadflow_crm_sync_items", "CRM sync rows by status", labels=["status"])
        for status, n in sorted(crm["by_status"].items()):
            items.add_metric([status], n)
        yield items
        yield GaugeMetricFamily("leadflow_crm_sync_stuck", "CRM rows past their deadline", value=crm["stuck"])
        yield GaugeMetricFamily("leadflow_events_unprocessed", "Events not yet processed",
                                value=ops.unprocessed_events())
        beats = GaugeMetricFamily("leadflow_heartbeat_age_seconds", "Seconds since each background loop reported",
                                  labels=["name"])
        for name, seconds in sorted(ops.heartbeats().items()):
            beats.add_metric([name], seconds)
        yield beats
        paused = GaugeMetricFamily("leadflow_switch_paused", "1 when a kill switch holds that work", labels=["name"])
        for name, is_paused in sorted(ops.switches().items()):
            paused.add_metric([name], int(is_paused))
        yield paused
