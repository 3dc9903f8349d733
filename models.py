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


#: The example app's demo data: its tenants (name: active) and their users.
DEMO_TENANTS = {"acme": True, "globex": True, "initech": False}
DEMO_USERS = {
    "acme": [("Alice", True), ("Bob", True), ("Carol", False)],
    "globex": [("Dave", True), ("Eve", False)],
    "initech": [("Frank", True)],
}


async def seed_demo(database) -> None:
    """The demo data of `pinrepl init-database --demo` (and of the transcripts' test
    database): tenants, their users, two notifications each."""
    for tenant_name, active in DEMO_TENANTS.items():
        tenant = await database.tenants.insert(name=tenant_name, active=active)
        for name, subscribed in DEMO_USERS[tenant_name]:
            user = await database.users.insert(
                tenant_id=tenant.id, name=name, subscribed=subscribed,
                email=f"{name.lower()}@{tenant.name}.example",
            )
            for n in (1, 2):
                await database.notifications.insert(
                    tenant_id=tenant.id, user_id=user.id, message=f"hello {name} #{n}"
                )
