from pinrepl import BackgroundJob


class DeliverNotifications(BackgroundJob):
    """Sends every unsent notification, `batch_size` at a time, and marks it sent."""

    batch_size = 100

    def meta(self):
        self.schedule("*/5 * * * *")

    async def run(self):
        delivered = 0
        while batch := await (
            self.database.notifications.where(sent=False).order_by("id").limit(self.batch_size).all()
        ):
            for notification in batch:
                await notification.send()
                await notification.update(sent=True)
            delivered += len(batch)
        print(f"delivered {delivered} notifications")
