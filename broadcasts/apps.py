from django.apps import AppConfig


class BroadcastsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "broadcasts"
    verbose_name = "Broadcasts"

    def ready(self) -> None:
        # Delivery withholds a claimed message whose broadcast was cancelled or paused meanwhile
        # (broadcasts/delivery_hold.py); campaigns sits below broadcasts and never imports it.
        from broadcasts.delivery_hold import broadcast_holds
        from campaigns.delivery import delivery_hold_register

        delivery_hold_register(broadcast_holds)
