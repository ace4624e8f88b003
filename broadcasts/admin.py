"""Broadcasts in the admin: build (audience, variants, schedule), test, approve, send, pause, resume,
cancel, and watch the progress bar. Every action is a POST to <id>/act/ that calls one service;
permissions are checked there and again in the services (the approval threshold)."""

from __future__ import annotations

from functools import partial
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from broadcasts import reports, services
from broadcasts.models import EDITABLE_STATUSES, Broadcast, BroadcastStatus, BroadcastVariant
from campaigns.models import MessageKind

ACTIONS = ("test", "approve", "send", "pause", "resume", "cancel")


class VariantForm(forms.ModelForm):
    def clean_template(self) -> Any:
        template = self.cleaned_data.get("template")
        if template is not None and template.kind != MessageKind.MARKETING:
            # Delivery applies unsubscribes, consent, topics and caps to marketing only (finding 2).
            raise ValidationError(f"Template {template.key!r} is {template.kind}: a broadcast sends marketing email "
                                  "only (unsubscribes, consent, topics and caps apply); choose a marketing template.")
        return template


class VariantInline(admin.TabularInline):
    model = BroadcastVariant
    form = VariantForm
    extra = 0
    min_num = 1
    max_num = 4
    fields = ("position", "template", "subject", "pinned")
    readonly_fields = ("pinned",)
    autocomplete_fields = ()
    verbose_name = "variant (A/B: 2 to 4)"

    @admin.display(description="Sends revision")
    def pinned(self, obj: BroadcastVariant) -> str:
        return f"{obj.revision.template.key} r{obj.revision.number}" if obj.revision_id and obj.revision else "-"

    # Variants are part of the broadcast: its own permissions apply (no separate ones for variants),
    # and only while it may still be edited.
    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = request.user
        return user.has_perm("broadcasts.view_broadcast") or user.has_perm("broadcasts.change_broadcast")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        perm = "broadcasts.change_broadcast" if obj is not None else "broadcasts.add_broadcast"
        return request.user.has_perm(perm) and (obj is None or obj.status in EDITABLE_STATUSES)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_change_permission(request, obj)


@admin.register(Broadcast)
class BroadcastAdmin(admin.ModelAdmin):
    list_display = ("key", "name", "status", "progress_bar", "sender", "schedule", "send_at", "created_at")
    list_filter = ("status",)
    list_select_related = ("sender",)
    search_fields = ("key", "name")
    show_full_result_count = False
    filter_horizontal = ("segments", "lists", "exclude_segments", "exclude_lists")
    inlines = (VariantInline,)
    change_form_template = "admin/broadcasts/broadcast/change_form.html"
    readonly_fields = ("status", "status_message", "progress_bar", "approval", "ab_decision", "recipients_total",
                       "started_at", "queued_at")
    fieldsets = (
        (None, {"fields": ("key", "name", "sender", "status", "status_message", "progress_bar")}),
        ("Audience", {"fields": ("segments", "lists", "exclude_segments", "exclude_lists"),
                      "description": "Contacts in any chosen segment or list, minus those in an excluded one. "
                                     "Test contacts get test sends only."}),
        ("Schedule", {"fields": ("schedule", "send_at", "window_start", "window_end"),
                      "description": "Each contact's time zone: from their country (docs/broadcasts.md). "
                                     "The schedule is part of the approval: changing it voids the approval."}),
        ("Links", {"fields": ("utm",)}),
        ("A/B test (two or more variants)", {"fields": ("test_share", "ab_metric", "ab_wait_minutes",
                                                        "ab_min_sent", "ab_decision")}),
        ("Approval and progress", {"fields": ("approval", "recipients_total", "started_at", "queued_at")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and obj.status not in EDITABLE_STATUSES:
            # Sending (or sent): nothing that was approved may change any more.
            return [f.name for f in Broadcast._meta.fields if f.editable] + ["segments", "lists", "exclude_segments",
                                                                               "exclude_lists",
                                                                               *self.readonly_fields]
        return self.readonly_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Broadcast]:
        return super().get_queryset(request).select_related("sender", "approved_by")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A broadcast that sent anything is history; a draft may go.
        return super().has_delete_permission(request, obj) and (obj is None or obj.status in EDITABLE_STATUSES)

    def save_model(self, request: HttpRequest, obj: Broadcast, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]  # a staff user: the admin requires login
        errors = services.schedule_problems(obj) if obj.schedule != "now" and obj.sender_id else {}
        for field, message in errors.items():
            self.message_user(request, f"{field}: {message}", messages.WARNING)
        if not change:
            super().save_model(request, obj, form, change)
            return
        # Only what the form changed: status, counts and approval are the services' (conditional
        # UPDATEs), and writing the whole row back could undo a pause made meanwhile.
        concrete = {f.name for f in Broadcast._meta.concrete_fields}
        fields = [name for name in form.changed_data if name in concrete]
        if fields:
            obj.save(update_fields=[*fields, "updated_at"])

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # Variants and audience are saved now: pin the revisions, void an approval that changed.
        broadcast = form.instance
        before = broadcast.status
        if before not in EDITABLE_STATUSES:
            return  # nothing was editable
        try:
            services.broadcast_save(broadcast=broadcast, actor=request.user)
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            return
        if before == BroadcastStatus.APPROVED and broadcast.status == BroadcastStatus.DRAFT:
            self.message_user(request, "Changed after its approval: send a test and approve it again.",
                              messages.WARNING)

    # --- Display ------------------------------------------------------------------------------------

    @admin.display(description="Progress")
    def progress_bar(self, obj: Broadcast) -> str:
        if obj.pk is None or obj.status in (BroadcastStatus.DRAFT, BroadcastStatus.APPROVED, BroadcastStatus.SCHEDULED):
            return "-"
        p = services.broadcast_progress(obj)
        parts = [("sent", p.sent, "#2e7d32"), ("failed", p.failed, "#c62828"),
                 ("suppressed", p.suppressed - p.cancelled, "#9e9e9e"), ("cancelled", p.cancelled, "#616161"),
                 ("queued", p.queued + p.held, "#90caf9")]
        bar = format_html_join("", '<span title="{}: {}" style="display:inline-block;height:100%;width:{}%;'
                                   'background:{}"></span>',
                               ((name, n, p.percent(n), color) for name, n, color in parts if n))
        done = p.sent + p.failed + p.suppressed
        return format_html(
            '<div class="broadcast-progress" role="progressbar" aria-valuemin="0" aria-valuemax="{}" '
            'aria-valuenow="{}" style="width:16em;height:1em;background:#eee;display:flex">{}</div>'
            '<div class="broadcast-counts">{} sent, {} failed, {} not sent (suppressed, consent, caps), '
            '{} cancelled, {} queued, {} held by the pause, {} not queued yet, of {}</div>',
            p.total, done, bar, p.sent, p.failed, p.suppressed - p.cancelled, p.cancelled, p.queued, p.held,
            p.not_queued, p.total)

    @admin.display(description="Approval")
    def approval(self, obj: Broadcast) -> str:
        if obj.approved_at:
            return format_html("Approved by {} at {:%Y-%m-%d %H:%M} for {} contacts (fingerprint {}…)",
                               obj.approved_by or "-", obj.approved_at, obj.approved_count,
                               obj.approved_fingerprint[:12])
        if obj.test_sent_at:
            current = obj.test_fingerprint == obj.fingerprint
            return format_html("Test sent {:%Y-%m-%d %H:%M}{}; not approved yet.", obj.test_sent_at,
                               "" if current else " (of an earlier version: send a test again)")
        return "Not tested yet: send a test to the test audience, then approve."

    @admin.display(description="A/B decision")
    def ab_decision(self, obj: Broadcast) -> str:
        d = obj.decision or {}
        if not d:
            return f"Winner chosen at {obj.ab_decide_at:%Y-%m-%d %H:%M}" if obj.ab_decide_at else "-"
        confidence = d.get("confidence") or {}
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            ((v["label"], v["subject"], v["sent"], v["unique_opens"], v["unique_clicks"], f"{100 * v['rate']:.1f} %",
              "-" if confidence.get(v["label"]) is None else f"{100 * confidence[v['label']]:.1f} %")
             for v in d.get("variants", [])))
        extra = f"; {d['method']}" if "method" in d else ""
        # Measured against the z-test's leader (finding 11); the decision takes that leader as winner,
        # so the two are one, but the label says which one it was measured against.
        leader = d.get("leader") or d.get("winner")
        return format_html(
            "<p>Winner: <b>{}</b> by {} (difference {}{}), decided {}; {} more contacts got it.</p>"
            "<table><tr><th>Variant</th><th>Subject</th><th>Sent</th><th>Unique opens</th><th>Unique clicks</th>"
            "<th>Rate</th><th>Confidence its rate differs from {}'s (the leader)</th></tr>{}</table>",
            d.get("winner"), d.get("metric"), d.get("difference"), extra, d.get("decided_at"), d.get("rest", "-"),
            leader, rows)

    # --- Actions ------------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        def view(route: str, func: Any, name: str) -> URLPattern:
            return path(route, self.admin_site.admin_view(func), name=f"broadcasts_broadcast_{name}")

        return [view("<int:pk>/act/", self.act_view, "act"),
                # Reports (campaigns/reports.py, issue 21 item 4): totals, chart, links, A/B, CSV.
                view("<int:pk>/report/", partial(reports.report_view, self), "report"),
                view("<int:pk>/report/csv/", partial(reports.report_csv_view, self), "report_csv"),
                *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        broadcast = Broadcast.objects.select_related("sender").filter(pk=object_id).first() \
            if str(object_id).isdigit() else None
        if broadcast is not None and request.method == "GET":
            for warning in services.broadcast_warnings(broadcast):
                self.message_user(request, warning, messages.WARNING)
        context = {**(extra_context or {}), "broadcast_actions": self._actions_for(request, broadcast)}
        return super().change_view(request, object_id, form_url, context)

    def _actions_for(self, request: HttpRequest, broadcast: Broadcast | None) -> list[tuple[str, str]]:
        if broadcast is None or not self.has_change_permission(request, broadcast):
            return []
        status = broadcast.status
        available = {
            "test": status == BroadcastStatus.DRAFT, "approve": status == BroadcastStatus.DRAFT,
            "send": status == BroadcastStatus.APPROVED, "pause": status in services.PAUSABLE,
            "resume": status == BroadcastStatus.PAUSED, "cancel": status in services.CANCELLABLE,
        }
        labels = {"test": "Send test to the test audience", "approve": "Approve", "send": "Send / schedule",
                  "pause": "Pause", "resume": "Resume", "cancel": "Cancel…"}
        return [(a, labels[a]) for a in ACTIONS if available[a]]

    def act_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if request.method != "POST" or not self.has_change_permission(request):
            raise PermissionDenied  # before the lookup: a role without access learns nothing from a 404
        broadcast = get_object_or_404(Broadcast.objects.select_related("sender"), pk=pk)
        back = HttpResponseRedirect(reverse("admin:broadcasts_broadcast_change", args=[pk]))
        action = request.POST.get("action", "")
        try:
            text = self._act(request, broadcast, action)
        except PermissionDenied as exc:
            self.message_user(request, str(exc) or "Not allowed.", messages.ERROR)
            return back
        except ValidationError as exc:
            self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            return back
        self.message_user(request, text, messages.SUCCESS)
        return back

    def _act(self, request: HttpRequest, broadcast: Broadcast, action: str) -> str:
        user = request.user
        if action == "test":
            ids = services.broadcast_send_test(broadcast=broadcast, actor=user)
            return f"Test sent: {len(ids)} message(s) to {services.staging_recipient(broadcast)}."
        if action == "approve":
            services.broadcast_approve(broadcast=broadcast, actor=user)
            return f"Approved for {broadcast.approved_count} contacts."
        if action == "send":
            services.broadcast_send(broadcast=broadcast, actor=user)
            if broadcast.status == BroadcastStatus.SCHEDULED:
                return f"Scheduled for {broadcast.send_at:%Y-%m-%d %H:%M %Z}."
            return f"Sending to {broadcast.recipients_total} contacts."
        if action == "pause":
            held = services.broadcast_pause(broadcast=broadcast, actor=user, reason=request.POST.get("reason", ""))
            return f"Paused: {held} queued message(s) held until you resume."
        if action == "resume":
            released = services.broadcast_resume(broadcast=broadcast, actor=user)
            return f"Resumed: {released} held message(s) released."
        if action == "cancel":
            reason = request.POST.get("reason", "")
            cancelled = services.broadcast_cancel(broadcast=broadcast, actor=user, reason=reason)
            return f"Cancelled: {cancelled} message(s) not sent."
        raise ValidationError(f"unknown action {action[:50]!r}; one of {', '.join(ACTIONS)}")
