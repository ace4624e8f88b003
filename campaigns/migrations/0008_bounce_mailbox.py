# Issue 17 item 3: bounce mailboxes. A sender profile's IMAP settings (campaigns/bounce_mailbox.py),
# the mails read from it under a unique key per mailbox (applied once), and Ops may view them
# (core/roles.py). SenderProfile is a small table; BounceMailboxItem is new.

import django.db.models.deletion
from django.db import migrations, models

from core.roles import migrate_roles


class Migration(migrations.Migration):

    dependencies = [
        ('campaigns', '0007_sender_dkim_message_rates'),
        ('core', '0010_roles_login_lockouts'),
    ]

    operations = [
        migrations.AddField(
            model_name='senderprofile',
            name='bounce_imap_folder',
            field=models.CharField(blank=True, default='INBOX', help_text='The folder bounces arrive in', max_length=200, verbose_name='IMAP folder'),
        ),
        migrations.AddField(
            model_name='senderprofile',
            name='bounce_imap_host',
            field=models.CharField(blank=True, help_text='IMAP server; empty: no bounce mailbox', max_length=253, verbose_name='IMAP host'),
        ),
        migrations.AddField(
            model_name='senderprofile',
            name='bounce_imap_password_encrypted',
            field=models.TextField(blank=True, editable=False),
        ),
        migrations.AddField(
            model_name='senderprofile',
            name='bounce_imap_password_env',
            field=models.CharField(blank=True, help_text='Environment variable holding the password (LEADFLOW_IMAP_...)', max_length=100, verbose_name='IMAP password env'),
        ),
        migrations.AddField(
            model_name='senderprofile',
            name='bounce_imap_port',
            field=models.PositiveIntegerField(blank=True, help_text='Empty: 993 for TLS, 143 for STARTTLS or plain', null=True, verbose_name='IMAP port'),
        ),
        migrations.AddField(
            model_name='senderprofile',
            name='bounce_imap_security',
            field=models.CharField(choices=[('tls', 'TLS (port 993)'), ('starttls', 'STARTTLS (port 143)'), ('plain', 'None (a server on a trusted network only)')], default='tls', max_length=10, verbose_name='IMAP security'),
        ),
        migrations.AddField(
            model_name='senderprofile',
            name='bounce_imap_user',
            field=models.CharField(blank=True, max_length=254, verbose_name='IMAP user'),
        ),
        migrations.CreateModel(
            name='BounceMailboxItem',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('mailbox', models.CharField(help_text='user@host:port/folder', max_length=400)),
                ('key', models.CharField(help_text="The mail's Message-ID, else sha256 of its bytes", max_length=255)),
                ('uid', models.BigIntegerField(blank=True, help_text='IMAP UID when it was read', null=True)),
                ('status', models.CharField(choices=[('processed', 'Processed'), ('ignored', 'Ignored'), ('unparsed', 'Unparsed')], max_length=20)),
                ('kind', models.CharField(blank=True, help_text='bounce, complaint or ignored', max_length=20)),
                ('subject', models.CharField(blank=True, max_length=300)),
                ('reason', models.TextField(blank=True, help_text='Why it was ignored or could not be parsed')),
                ('recipients', models.JSONField(blank=True, default=list, help_text='Per recipient: address, hard/soft/complaint, status, message, outcome')),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('sender', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='campaigns.senderprofile')),
            ],
            options={
                'ordering': ['-id'],
                'indexes': [models.Index(condition=models.Q(('status', 'unparsed')), fields=['-created_at'], name='bounceitem_unparsed_idx')],
                'constraints': [models.UniqueConstraint(fields=('mailbox', 'key'), name='bounceitem_mailbox_key_unique')],
            },
        ),
        migrations.RunPython(migrate_roles, migrations.RunPython.noop),
    ]
