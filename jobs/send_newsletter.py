from pinrepl import BackgroundJob


class SendNewsletter(BackgroundJob):
    """Sends the newsletter to the subscribed users of every active tenant."""

    multi_tenant = True

    def meta(self):
        self.schedule("0 * * * *")
        self.schedule("0 12 * * 1")

    def tenants_filter(self, tenants):
        return tenants.where(active=True)

    async def run(self):
        users = await self.database.users.where(subscribed=True).order_by("id").all()
        for user in users:
            await user.send_newsletter()
        print(f"newsletter for {self.tenant.name}: {len(users)} sent")
