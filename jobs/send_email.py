from pinrepl import BackgroundJob


class SendEmail(BackgroundJob):
    """Sends one email: `pinrepl run-background-job --name send-email ADDRESS MESSAGE`."""

    async def run(self, address, message):
        print(f"email to {address}: {message}")
