"""RQ jobs of email delivery (queue `delivery`): thin wrappers that take ids and call a service."""

from __future__ import annotations

from campaigns import bounce_mailbox, delivery


def delivery_run_job(sender_id: int, slot: int | None = None) -> dict[str, int]:
    """Enqueued by delivery_kick after COMMIT: delivers the sender's due messages in batches."""
    return dict(delivery.delivery_run(sender_id=sender_id, slot=slot))


def delivery_sweeper() -> dict[str, int]:
    """Scheduled every minute (config/schedules.py): re-queues stale claims, kicks due senders."""
    return delivery.delivery_sweep()


def message_deliver_job(message_id: int) -> dict[str, int]:
    """Deliver one message in its own job (the per-email baseline of bench/delivery.py)."""
    return dict(delivery.message_deliver(message_id=message_id).outcomes)


def bounce_mailboxes_poll_job() -> dict[str, str]:
    """Scheduled (config/schedules.py): reads every configured bounce mailbox once. A mailbox that
    cannot be polled fails the job (visible with its reason) after the others were read."""
    outcomes = bounce_mailbox.bounce_mailboxes_poll()
    failed = [f"{name}: {outcome}" for name, outcome in outcomes if isinstance(outcome, bounce_mailbox.MailboxError)]
    if failed:
        raise RuntimeError("; ".join(failed))
    return {name: f"{o.processed} processed, {o.ignored} ignored, {o.unparsed} unparsed"
            for name, o in outcomes if isinstance(o, bounce_mailbox.PollResult)}
