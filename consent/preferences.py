"""The preference center: the signed link in every email (/e/u/<token>, campaigns/views.py)
opens a page where the contact picks the topics they want, or unsubscribes from all.

A one-click unsubscribe (RFC 8058 POST from the mailbox provider) leaves the email's topic when
that topic's one_click_scope is "topic", else all marketing (an email without a topic: all)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from consent.models import ConsentSource, OneClickScope, Topic, TopicSubscription
from consent.selectors import message_topic_id
from consent.services import topic_set
from contacts.models import ConsentStatus
from core.login_throttle import client_ip


def _topics(contact: Any) -> list[dict[str, Any]]:
    chosen = dict(TopicSubscription.objects.filter(contact=contact).values_list("topic_id", "subscribed"))
    default = contact.consent_status == ConsentStatus.GRANTED  # no choice yet: what consent allows
    return [{"key": t.key, "name": t.name, "description": t.description, "subscribed": chosen.get(t.pk, default)}
            for t in Topic.objects.all()]


def preference_center(request: HttpRequest, message: Any, *, masked_email: str) -> HttpResponse:
    from campaigns.services import contact_unsubscribe, message_unsubscribe_count

    contact = message.contact
    ip = client_ip(request)  # behind TRUSTED_PROXY_COUNT proxies, the visitor's (the record's proof)
    if request.method == "POST":
        one_click = request.POST.get("List-Unsubscribe") == "One-Click"
        topic_id = message_topic_id(message)  # the topic it was sent under (its revision's)
        topic = Topic.objects.filter(pk=topic_id).first() if topic_id else None
        if one_click and topic is not None and topic.one_click_scope == OneClickScope.TOPIC:
            if topic_set(contact=contact, topic=topic, subscribed=False, source=ConsentSource.UNSUBSCRIBE,
                         actor="the contact", ip=ip, message_id=message.pk, proof={"one_click": True}):
                message_unsubscribe_count(message)
            return render(request, "public/preferences.html", {"left_topic": topic})
        if not one_click and request.POST.get("action") == "topics":
            wanted = set(request.POST.getlist("topic"))
            left = False
            for each in Topic.objects.all():
                changed = topic_set(contact=contact, topic=each, subscribed=each.key in wanted,
                                    source=ConsentSource.PREFERENCES, actor="the contact", ip=ip,
                                    message_id=message.pk)
                left = left or (changed and each.key not in wanted)
            if left:  # one unsubscribe for the email, however many topics were left
                message_unsubscribe_count(message)
            return render(request, "public/preferences.html", {
                "saved": True, "email": masked_email, "topics": _topics(contact)})
        contact_unsubscribe(contact=contact, message=message, ip=ip,
                            source="one-click unsubscribe" if one_click else "unsubscribe page")
        return render(request, "public/preferences.html", {"done": True})
    return render(request, "public/preferences.html", {"email": masked_email, "topics": _topics(contact)})
