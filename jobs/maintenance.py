import logging

from pinrepl import BackgroundJob

log = logging.getLogger("jobs.maintenance")


class Maintenance(BackgroundJob):
    """Nightly clean-up: forgets notifications that were delivered."""

    def meta(self):
        self.schedule("30 3 * * *")

    async def run(self):
        removed = await self.database.notifications.where(sent=True).delete()
        log.info("removed %d delivered notifications", removed)
        print("maintenance done")
