"""Models of pinrepl's example app: users and their notifications, in tenants."""

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from pinrepl import Model


class User(Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))
    subscribed: Mapped[bool] = mapped_column(default=False)

    async def send_newsletter(self) -> None:
        # "Sending" is printing: the example app never touches the network.
        print(f"newsletter sent to {self.email}")


class Notification(Model):
    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    message: Mapped[str] = mapped_column(String(500))
    sent: Mapped[bool] = mapped_column(default=False)

    async def send(self) -> None:
        print(f"notification {self.id} sent to user {self.user_id}: {self.message}")


DEMO_USERS = {
    "acme": [("Alice", True), ("Bob", True), ("Carol", False)],
    "globex": [("Dave", True), ("Eve", False)],
    "initech": [("Frank", True)],
}


async def seed_demo(database) -> None:
    """Called by `pinrepl init-database --demo`, after the demo tenants exist."""
    for tenant in await database.tenants.order_by("id").all():
        for name, subscribed in DEMO_USERS.get(tenant.name, []):
            user = await database.users.insert(
                tenant_id=tenant.id, name=name, subscribed=subscribed,
                email=f"{name.lower()}@{tenant.name}.example",
            )
            for n in (1, 2):
                await database.notifications.insert(
                    tenant_id=tenant.id, user_id=user.id, message=f"hello {name} #{n}"
                )
