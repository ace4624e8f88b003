"""Admin for delivery: templates (with preview and "send test"), sender profiles (with their
current send rates), the outbox (filter by status and reason, retry) and the suppression list."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from campaigns import dkim_signing, rendering, services
from campaigns.models import BounceMailboxItem, EmailTemplate, Message, SenderProfile, Suppression, email_hash
from consent import selectors
from contacts.emails import CanonicalEmailField
from contacts.models import Contact
from core.admin_utils import EstimatedCountPaginator, ReadOnlyAdmin
from core.dependents import DependentsWarningMixin
from core.secrets import encrypt


class PreviewForm(forms.Form):
    # Picked by searching email or name (the admin's autocomplete over ContactAdmin.search_fields);
    # an id that matches no contact is an error, never a silent fallback to the sample contact.
    contact = forms.ModelChoiceField(
        Contact.objects.all(), required=False,
        widget=AutocompleteSelect(Message._meta.get_field("contact"), admin.site),
        help_text="Search by email or name (empty: a sample contact)",
        error_messages={"invalid_choice": "No contact with that id: search for the contact by email."})
    sender = forms.ModelChoiceField(SenderProfile.objects.all(), required=False, empty_label="Default sender")
    send_test_to = forms.EmailField(required=False, help_text='Address for "send test"')


@admin.register(EmailTemplate)
class EmailTemplateAdmin(DependentsWarningMixin, admin.ModelAdmin):
    list_display = ["key", "name", "kind", "subject", "updated_at"]
    list_filter = ["kind"]
    search_fields = ["key", "name", "subject"]
    readonly_fields = ["created_at", "updated_at", "revision_history"]
    change_form_template = "admin/campaigns/emailtemplate/change_form.html"

    def save_model(self, request: HttpRequest, obj: EmailTemplate, form: Any, change: bool) -> None:
        from campaigns.revisions import template_save

        # A new revision (the draft): workflows keep sending the revisions their versions pin.
        revision = template_save(template=obj, actor=request.user, source="admin")
        live = revision.pins.filter(version__state="production").exists()
        self.message_user(request, f"Saved as revision r{revision.number}. "
                          + ("It is live in a production workflow version." if live else
                             "Production keeps sending the revision its workflow versions pin until a version "
                             "pinning this one is promoted (workflow > Versions > New draft with the latest "
                             "templates)."), messages.INFO)

    @admin.display(description="Revisions")
    def revision_history(self, obj: EmailTemplate) -> str:
        if not obj.pk:
            return "—"
        revisions = obj.revisions.select_related("created_by") \
            .prefetch_related("pins__version__workflow").order_by("-number")[:20]
        rows = [format_html("<li>r{} · {} · {} · {}{}</li>", r.number, r.created_at.strftime("%Y-%m-%d %H:%M"),
                            r.created_by or r.source or "—", r.subject,
                            format_html(" · pinned by {}", ", ".join(str(p.version) for p in r.pins.all()))
                            if r.pins.all() else "")
                 for r in revisions]
        return format_html("<ul id='template-revisions'>{}</ul>", mark_safe("".join(rows)))  # noqa: S308  escaped above

    def get_urls(self) -> list[URLPattern]:
        return [path("<int:pk>/preview/", self.admin_site.admin_view(self.preview_view),
                     name="campaigns_emailtemplate_preview"), *super().get_urls()]

    def preview_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        template = get_object_or_404(EmailTemplate, pk=pk)
        if not self.has_view_permission(request, template):
            raise PermissionDenied
        form = PreviewForm(request.POST if request.method == "POST" else None)
        context: dict[str, Any] = {**self.admin_site.each_context(request), "opts": self.model._meta,
                                   "original": template, "title": f"Preview: {template.key}", "form": form}
        if form.is_bound and form.is_valid():
            contact = self._contact(form.cleaned_data["contact"])
            sender = form.cleaned_data["sender"]
            if request.POST.get("action") == "send_test":
                return self._send_test(request, template, contact, sender, form.cleaned_data["send_test_to"])
            context.update(self._render(template, contact, sender))
        elif not form.is_bound:
            context.update(self._render(template, self._contact(None), None))
        return TemplateResponse(request, "admin/campaigns/emailtemplate/preview.html", context)

    def _contact(self, chosen: Contact | None) -> Any:
        if chosen is not None:
            contact = Contact.objects.with_scores().filter(pk=chosen.pk).first()  # score, grade: same query
            if contact is not None:
                return contact
        return Contact(**{k: v for k, v in rendering.SAMPLE_CONTACT.items()})

    def _render(self, template: EmailTemplate, contact: Any, sender: Any) -> dict[str, Any]:
        try:
            message = services.message_preview(template=template, contact=contact, sender=sender)
        except rendering.TemplateInvalid as exc:
            return {"render_error": str(exc)}
        except services.NoSender as exc:
            return {"render_error": str(exc)}
        return {"preview": message, "preview_frame": email_frame(message.html, element_id="preview-html")}

    def _send_test(self, request: HttpRequest, template: EmailTemplate, contact: Any, sender: Any,
                   to_email: str) -> HttpResponse:
        if not self.has_change_permission(request, template):
            raise PermissionDenied
        back = reverse("admin:campaigns_emailtemplate_preview", args=[template.pk])
        if not to_email or contact.pk is None:
            self.message_user(request, "Choose a contact and an address to send the test to.", messages.ERROR)
            return HttpResponseRedirect(back)
        try:
            message = services.message_send_test(template=template, contact=contact, to_email=to_email,
                                                 actor=request.user, sender=sender)
        except (services.NoSender, ValidationError) as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(back)
        self.message_user(request, format_html(
            'Test queued to {} as <a href="{}">message #{}</a>.', to_email,
            reverse("admin:campaigns_message_change", args=[message.pk]), message.pk))
        return HttpResponseRedirect(back)


class SenderProfileForm(forms.ModelForm):
    """The DKIM private key is write-only: pasted here, stored encrypted, never shown again."""

    dkim_private_key = forms.CharField(
        required=False, strip=True, widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "off"}),
        label="DKIM private key", help_text="PEM (-----BEGIN PRIVATE KEY----- ...), RSA, 2048 bits advised. Stored "
                                            "encrypted; leave empty to keep the stored one. A key env wins over it.")
    dkim_forget_key = forms.BooleanField(required=False, label="Forget the stored DKIM key")
    bounce_imap_password = forms.CharField(
        required=False, strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        label="IMAP password", help_text="Stored encrypted; leave empty to keep the stored one. A password env wins.")

    class Meta:
        model = SenderProfile
        fields = "__all__"  # noqa: DJ007  the admin's fieldsets choose what is shown

    def clean_dkim_private_key(self) -> str:
        pem = self.cleaned_data.get("dkim_private_key") or ""
        if pem:
            try:
                dkim_signing.load_key(pem, where="DKIM private key")
            except dkim_signing.DkimUnavailable as exc:
                raise ValidationError(str(exc)) from None
            self.instance.dkim_key_encrypted = encrypt(pem)  # before model validation, which wants a key
        return ""

    def clean_bounce_imap_password(self) -> str:
        password = self.cleaned_data.get("bounce_imap_password") or ""
        if password:
            self.instance.bounce_imap_password_encrypted = encrypt(password)  # before model validation
        return ""

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("dkim_forget_key") and not self.cleaned_data.get("dkim_private_key"):
            self.instance.dkim_key_encrypted = ""
        return data


@admin.register(SenderProfile)
class SenderProfileAdmin(DependentsWarningMixin, admin.ModelAdmin):
    form = SenderProfileForm
    list_display = ["name", "from_email", "rate", "is_default", "is_paused", "sent_last_minute", "sent_last_hour"]
    list_filter = ["is_default", "is_paused"]
    fieldsets = [
        (None, {"fields": ["name", "from_name", "from_email", "reply_to", "postal_address", "is_default",
                           "is_paused"]}),
        ("Backend", {"fields": ["email_url"]}),
        ("Throttling", {"fields": ["rate", "burst", "domain_limits", "warmup_started_on", "warmup_schedule"]}),
        ("Marketing rules", {"fields": ["quiet_hours_start", "quiet_hours_end", "time_zone", "frequency_cap",
                                        "frequency_days"]}),
        ("Staging", {"fields": ["staging_recipient"]}),
        ("DKIM signing", {"fields": ["dkim_domain", "dkim_selector", "dkim_key_env", "dkim_private_key",
                                     "dkim_forget_key", "dkim_status"],
                          "description": "Gmail and Yahoo require DKIM for bulk senders. Publish the TXT record "
                                         "shown below, then set the domain to start signing."}),
        ("Bounce mailbox (IMAP)", {"fields": ["bounce_imap_host", "bounce_imap_security", "bounce_imap_port",
                                              "bounce_imap_user", "bounce_imap_password_env", "bounce_imap_password",
                                              "bounce_imap_folder"],
                                   "description": "For senders not on SES: the mailbox bounces and feedback-loop "
                                                  "complaints arrive in, polled every 5 minutes (docs/delivery.md)."}),
    ]
    readonly_fields = ["dkim_status"]

    @admin.display(description="DKIM status and DNS record")
    def dkim_status(self, obj: SenderProfile) -> str:
        if not obj.pk or not (obj.dkim_key_env or obj.dkim_key_encrypted):
            return "No key yet."
        try:
            key = dkim_signing.sender_key(domain=obj.dkim_domain or "(domain)", selector=obj.dkim_selector,
                                          key_env=obj.dkim_key_env, key_encrypted=obj.dkim_key_encrypted)
        except dkim_signing.DkimUnavailable as exc:
            return format_html("<strong>Key unusable:</strong> {}", str(exc))
        assert key is not None
        state = "Signing." if obj.dkim_domain else "Not signing (no domain)."
        return format_html("{} Publish a TXT record at <code>{}._domainkey.{}</code>:<br><code>{}</code>", state,
                           obj.dkim_selector or "(selector)", obj.dkim_domain or "(domain)", key.public_record())

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        now = timezone.now()
        # Two grouped queries for the whole page, not two per row.
        self._minute = services.messages_stats(since=now - dt.timedelta(minutes=1))
        self._hour = services.messages_stats(since=now - dt.timedelta(hours=1))
        return super().changelist_view(request, extra_context)

    @admin.display(description="Sent last minute")
    def sent_last_minute(self, obj: SenderProfile) -> int:
        return getattr(self, "_minute", {}).get(obj.pk, {}).get("sent", 0)

    @admin.display(description="Sent last hour")
    def sent_last_hour(self, obj: SenderProfile) -> int:
        return getattr(self, "_hour", {}).get(obj.pk, {}).get("sent", 0)


# How a stored email is shown in the admin: in a sandboxed frame (no scripts, forms or same-origin
# access) with a CSP that loads nothing from outside: no open pixel fires and no remote image or
# font reveals that someone in the admin looked (images appear as their alt text).
EMAIL_FRAME_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:"


def email_frame(html: str, *, element_id: str = "message-html") -> str:
    srcdoc = f'<meta http-equiv="Content-Security-Policy" content="{EMAIL_FRAME_CSP}">{html}'
    return format_html('<iframe id="{}" title="The email as the recipient sees it" sandbox="" csp="{}" '
                       'referrerpolicy="no-referrer" srcdoc="{}" '
                       'style="width:100%;min-width:40rem;height:480px;border:1px solid #ccc;background:#fff">'
                       "</iframe>", element_id, EMAIL_FRAME_CSP, srcdoc)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "to", "template", "sender", "kind", "status", "reason", "attempts", "created_at", "sent_at"]
    list_filter = ["status", "reason", "kind", "sender", "template"]
    search_fields = ["=id", "=correlation_id", "contact__email", "to_email", "idempotency_key", "provider_message_id",
                     "relay_message_id"]
    list_select_related = ["contact", "template", "sender"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    raw_id_fields = ["contact"]
    actions = ["retry_messages"]
    readonly_fields = [*(f.name for f in Message._meta.fields), "rendered_email", "consent_in_force"]

    @admin.display(description="To")
    def to(self, obj: Message) -> str:
        return obj.to_email or obj.contact.email

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # The rendered email after the subject; its raw HTML only inside that field's <details>.
        fields = [name for name in self.readonly_fields if name not in ("html", "rendered_email")]
        at = fields.index("subject") + 1
        return [*fields[:at], "rendered_email", *fields[at:]]

    @admin.display(description="Why they got it")
    def consent_in_force(self, obj: Message) -> str:
        """The consent (and topic) records in force when it was sent (consent/selectors.py)."""
        answer = selectors.consent_in_force(obj)
        if answer.record is None:
            return answer.explanation
        link = reverse("admin:consent_consentrecord_change", args=[answer.record.pk])
        return format_html('<span id="consent-in-force">{}</span> <a href="{}">record #{}</a>',
                           answer.explanation, link, answer.record.pk)

    @admin.display(description="Email")
    def rendered_email(self, obj: Message) -> str:
        if not obj.html:
            return "Not rendered yet (rendered when it is sent)."
        return format_html("{}<details><summary>HTML source</summary><pre id='message-html-source' "
                           "style='white-space:pre-wrap'>{}</pre></details>", email_frame(obj.html), obj.html)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # messages come from workflows, the API and "send test", never typed in

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False if obj is not None else super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the outbox is history; erasing a contact removes theirs

    @admin.action(description="Retry selected failed, deferred or bounced messages",
                  permissions=["retry"])
    def retry_messages(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        # Count the selection before the retry: on a list filtered by status (?status=failed) the
        # retried rows leave the queryset, and counting afterwards said "-1 skipped".
        selected = list(queryset.values_list("id", flat=True))
        result = services.messages_retry(message_ids=selected, actor=request.user)
        skipped = len(selected) - result.queued - len(result.refused)
        self.message_user(request, f"{result.queued} message(s) queued again"
                          + (f"; {skipped} skipped (sent, queued or suppressed)" if skipped else "") + ".")
        if result.refused:
            shown = "; ".join(f"#{pk} to {address} ({reason})" for pk, address, reason in result.refused[:10])
            more = f" and {len(result.refused) - 10} more" if len(result.refused) > 10 else ""
            self.message_user(request, f"Not retried, the address is on the suppression list: {shown}{more}. "
                              "Remove the suppression first if the address works again.", messages.ERROR)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("campaigns.retry_message")


class SuppressionForm(forms.ModelForm):
    # The canonical form (contacts/emails.py), as delivery's check computes it: an address typed
    # with a fullwidth letter or an upper-case domain suppresses the mailbox it looks like.
    email = CanonicalEmailField(required=False, help_text="Empty only for an erased contact's entry")

    class Meta:
        model = Suppression
        fields = ["email", "reason", "detail", "source"]

    def clean_email(self) -> str:
        email = str(self.cleaned_data.get("email") or "")
        if not email and not (self.instance.pk and self.instance.email_hash):
            raise ValidationError("Enter the address to suppress.")
        if email and Suppression.objects.filter(email_hash=email_hash(email)).exclude(pk=self.instance.pk).exists():
            raise ValidationError(f"{email} is already on the suppression list.")
        return email


@admin.register(Suppression)
class SuppressionAdmin(admin.ModelAdmin):
    form = SuppressionForm
    list_display = ["email_or_hash", "reason", "source", "created_at"]
    list_filter = ["reason"]
    search_fields = ["email"]
    readonly_fields = ["email_hash", "created_at"]
    show_full_result_count = False

    @admin.display(description="Address")
    def email_or_hash(self, obj: Suppression) -> str:
        return obj.email or f"(erased) {obj.email_hash[:12]}…"

    def save_model(self, request: HttpRequest, obj: Suppression, form: Any, change: bool) -> None:
        if obj.email:  # an erased contact's entry has only its hash, which must stay
            obj.email_hash = email_hash(obj.email)
        super().save_model(request, obj, form, change)


@admin.register(BounceMailboxItem)
class BounceMailboxItemAdmin(ReadOnlyAdmin):
    """What the bounce mailboxes held (campaigns/bounce_mailbox.py): read-only, never deleted here (a
    row is what stops a mail being applied twice); filter on *unparsed* for the mails left for a
    human, with the reason."""

    list_display = ["created_at", "mailbox", "uid", "status", "kind", "subject"]
    list_filter = ["status", "kind"]
    search_fields = ["=key", "subject", "mailbox"]
    readonly_fields = [f.name for f in BounceMailboxItem._meta.fields]
    list_select_related = ["sender"]
