"""/metrics: gauges computed at scrape time from the same selectors as the operations page.

With Redis down the scrape still answers: leadflow_redis_up 0, no queue samples, and every series
read from the database as usual."""

from __future__ import annotations

import math
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from config.db_router import replica_health
from core import ops


class LeadflowCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        redis = ops.redis_snapshot()
        yield GaugeMetricFamily("leadflow_redis_up", "1 when Redis answered this scrape; 0: no queue series",
                                value=int(redis.up))
        yield from self._redis_series(redis)
        yield from self._database_series()
        yield from self._replica_series()

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

    def _replica_series(self) -> Iterator[Metric]:
        """The read replica as this process sees it (config/db_router.py); no series without one."""
        health = replica_health()
        if health is None:
            return
        yield GaugeMetricFamily("leadflow_db_replica_in_use",
                                "1 when read-only work goes to the read replica; 0: to the primary "
                                "(the replica is down, lagging or not a standby)", value=int(health.usable))
        if health.lag is not None and math.isfinite(health.lag):
            yield GaugeMetricFamily("leadflow_db_replica_lag_seconds",
                                    "How far the replica was behind the primary at its last check", value=health.lag)

    def _sender_rate_series(self) -> Iterator[Metric]:
        """Per sender and UTC day (today and yesterday; `day` is the ISO date): counts and rates, the
        same figures as the operations page and the alerts (ops.sender_rates)."""
        labels = ["sender", "day"]
        families = {
            "sent": GaugeMetricFamily("leadflow_sender_sent", "Messages sent on the day", labels=labels),
            "complaints": GaugeMetricFamily("leadflow_sender_complaints",
                                            "Complaints about the day's messages", labels=labels),
            "complaint_rate": GaugeMetricFamily("leadflow_sender_complaint_rate",
                                                "Complaints over messages sent (Gmail: under 0.001, never 0.003)",
                                                labels=labels),
            "hard_bounces": GaugeMetricFamily("leadflow_sender_hard_bounces",
                                              "Hard bounces of the day's messages (reported or at RCPT)",
                                              labels=labels),
            "hard_bounce_rate": GaugeMetricFamily("leadflow_sender_hard_bounce_rate",
                                                  "Hard bounces over messages attempted", labels=labels),
        }
        for rate in ops.sender_rates():
            values = [rate.name, rate.day.isoformat()]
            families["sent"].add_metric(values, rate.sent)
            families["complaints"].add_metric(values, rate.complaints)
            families["complaint_rate"].add_metric(values, rate.complaint_rate)
            families["hard_bounces"].add_metric(values, rate.hard_bounces)
            families["hard_bounce_rate"].add_metric(values, rate.hard_bounce_rate)
        yield from families.values()

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

        yield from self._sender_rate_series()

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
