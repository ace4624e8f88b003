"""Delivery's hold for broadcasts (campaigns/delivery.py delivery_hold_register, registered in
apps.py): a claimed message of a cancelled broadcast is finished unsent, one of a paused broadcast
is held again.

broadcast_pause and broadcast_cancel change the messages still queued or deferred; one a worker had
claimed by then (`sending`) came back later through the sweeper (its worker was killed), a deferral
(quiet hours, warm-up, a domain's rate, a 4xx) or a hand-over, and went out. Every one of those
paths passes delivery's rules, so they are checked there, per batch: the broadcast's id is read
from the message's idempotency key (`broadcast:<id>:<contact id>`, Broadcast.idempotency_prefix),
so a batch without broadcast messages costs no query and one with them one primary-key lookup.
Only when that finds a stopped broadcast are its rows read again locked (FOR UPDATE, in delivery's
transaction with the UPDATE): broadcast_resume locks the row too, so a resume either comes first
(the message goes) or waits and then releases the message held here. A sending broadcast's row is
never locked by delivery (its queueing job holds it while it inserts a chunk).
A cancelled broadcast's message ends as broadcast_cancel leaves one (suppressed,
broadcast_cancelled); a paused one's as broadcast_pause leaves one (deferred, broadcast_paused,
until HOLD_UNTIL), so broadcast_resume releases it like the others and it is sent once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from broadcasts.models import Broadcast, BroadcastStatus
from broadcasts.services import CANCEL_REASON, HOLD_REASON, HOLD_UNTIL
from campaigns.delivery import Withheld
from campaigns.models import Message, MessageStatus

_KEY = re.compile(r"broadcast:(\d+):\d+")


def broadcast_holds(messages: Sequence[Message]) -> dict[int, Withheld]:
    """Message id -> Withheld for the batch's messages of cancelled or paused broadcasts."""
    by_broadcast: dict[int, list[int]] = {}
    for message in messages:
        match = _KEY.fullmatch(message.idempotency_key or "")
        if match:
            by_broadcast.setdefault(int(match[1]), []).append(message.pk)
    if not by_broadcast:
        return {}
    stopped_statuses = (BroadcastStatus.CANCELLED, BroadcastStatus.PAUSED)
    candidates = list(Broadcast.objects.filter(pk__in=by_broadcast, status__in=stopped_statuses)
                      .values_list("pk", flat=True))
    if not candidates:
        return {}
    stopped = (Broadcast.objects.select_for_update().filter(pk__in=candidates, status__in=stopped_statuses)
               .order_by("pk").values_list("pk", "key", "status", "status_message"))
    withheld: dict[int, Withheld] = {}
    for pk, key, status, why in stopped:
        if status == BroadcastStatus.CANCELLED:
            outcome = Withheld(MessageStatus.SUPPRESSED, CANCEL_REASON,
                               f"not sent: broadcast {key} was cancelled: {why}"[:2000])
        else:
            outcome = Withheld(MessageStatus.DEFERRED, HOLD_REASON, f"held: broadcast {key} is paused", HOLD_UNTIL)
        withheld.update(dict.fromkeys(by_broadcast[pk], outcome))
    return withheld
