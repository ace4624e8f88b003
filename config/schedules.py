"""Every periodic job of Leadflow, in one place (run by `manage.py scheduler`).

RQ's cron scheduler enqueues these into their queues; workers run them. Each entry says
why it exists. Jobs must be safe to run late, twice, or concurrently with themselves,
because a restarted scheduler runs interval jobs at once. Run exactly one scheduler.
"""

from rq import cron

from automation.crm.tasks import crm_sweeper
from automation.rollback import workflows_auto_rollback_job
from automation.tasks import enrollments_wake
from broadcasts.tasks import broadcasts_tick_job
from campaigns.tasks import bounce_mailboxes_poll_job, delivery_sweeper
from consent.optin import optin_sweep_job
from contacts.segments.tasks import segments_refresh_all_job
from contacts.tasks import import_sweeper
from contacts.tasks_events import events_sweeper
from core.tasks import alerts_check, heartbeat
from scoring.tasks import scores_decay

# Liveness of the whole background path (scheduler -> Redis -> worker -> database):
# ops and the readiness probe read core.Heartbeat; a stale row means work is stalled.
cron.register(heartbeat, "default", interval=60, kwargs={"name": "scheduler"}, result_ttl=300)

# Alert rules (core/alerts.py): queue age, dead letters, delivery failure rate, stuck messages and
# CRM rows, no sends while due; an incident is notified once and resolved when its condition clears.
cron.register(alerts_check, "default", interval=60, result_ttl=300)

# Imports whose worker died (SIGKILL, OOM) or whose RQ job Redis lost are re-queued; after
# three interrupted attempts they fail visibly. Nothing is half-imported either way.
cron.register(import_sweeper, "imports", interval=60, result_ttl=300)

# Events whose processing job was lost (Redis flushed, worker killed) are re-queued once they
# have waited 2 minutes; the pipeline claims events, so a late duplicate job does nothing.
cron.register(events_sweeper, "events", interval=60, result_ttl=300)

# CRM sync rows whose worker died mid-send (5 minutes silent) go back to pending, and every
# connection with due rows gets a sync job (Redis may have lost it). Claims make repeats harmless.
cron.register(crm_sweeper, "crm", interval=60, result_ttl=300)

# Workflows: enrollments whose wait is over (or whose step retry is due, or whose job Redis lost)
# are claimed in batches (SKIP LOCKED) and get advance jobs; due webhook retries too. Waits are
# scheduled per row, so this is one indexed query per tick; claims make overlapping ticks harmless.
cron.register(enrollments_wake, "default", interval=5, result_ttl=60)

# Automatic rollback (automation/rollback.py): opted-in workflows promoted in the last AUTO_ROLLBACK_HOURS
# whose steps start failing, or whose emails bounce or draw complaints, go back to the previous
# production version, with an incident. Locks the workflow and re-checks, so overlapping ticks are harmless.
cron.register(workflows_auto_rollback_job, "default", interval=60, result_ttl=300)

# Email delivery: messages claimed by a worker that died go back to the queue after
# DELIVERY_STALE_SECONDS, and senders with due work (deferred retries, quiet hours over, a kick
# lost with Redis) get a delivery job. Idempotent: claims are conditional UPDATEs.
cron.register(delivery_sweeper, "delivery", interval=60, result_ttl=300)

# Broadcasts (broadcasts/services.py broadcasts_tick): scheduled ones start when due, A/B tests are
# decided when their wait is over, and a sending broadcast whose queue job was lost (Redis flushed,
# worker killed) is kicked again. Row locks and unique outbox keys make a late or overlapping tick harmless.
cron.register(broadcasts_tick_job, "default", interval=30, result_ttl=300)

# Bounce mailboxes (senders not on SES; campaigns/bounce_mailbox.py): DSNs and feedback reports become
# suppressions and bounced messages. Every 5 minutes is soon enough for the next send; a mail is
# recorded under a unique key before it is flagged, so a late, repeated or overlapping run counts nothing twice.
cron.register(bounce_mailboxes_poll_job, "default", interval=300, result_ttl=3600)

# Double opt-in (consent/optin.py): unconfirmed signups get their one reminder after
# CONSENT_OPTIN_REMIND_HOURS and expire after CONSENT_OPTIN_EXPIRY_DAYS. Claims are conditional
# UPDATEs and the reminder's outbox key is unique, so a late or overlapping run sends nothing twice.
cron.register(optin_sweep_job, "default", interval=900, result_ttl=3600)

# Safety net for incremental segment membership: a full, set-based refresh of every active
# segment catches changes no event announced (time passing for "within N days", bulk edits).
cron.register(segments_refresh_all_job, "default", interval=3600, result_ttl=3600)

# Score decay: points of rules with a half-life shrink every day; cached scores, grades and MQL
# follow. Safe to run late or twice (it recomputes from the ledger).
cron.register(scores_decay, "default", cron="15 3 * * *", result_ttl=3600)
