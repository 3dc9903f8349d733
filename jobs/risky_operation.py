from pinrepl import BackgroundJob


class RiskyOperation(BackgroundJob):
    """Always fails: shows how a job's failure reaches the caller."""

    async def run(self):
        raise RuntimeError("the risky operation failed")
