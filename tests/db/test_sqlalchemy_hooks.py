"""`db/facade.py` reads SQLAlchemy's undocumented `InstanceState.committed_state` (the loaded
value of an attribute changed since, kept to put the record back as the database holds it
after a failed call; pyproject bounds SQLAlchemy below its next minor version): fail loudly,
naming it, if SQLAlchemy changes what it holds, rather than letting a rollback quietly leave
records with values the database never had."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, attributes, mapped_column
from sqlalchemy.orm.state import InstanceState

from pinrepl.db.facade import _committed_values


class Base(DeclarativeBase):  # not pinrepl.Model: its tables are the app's
    pass


class Thing(Base):
    __tablename__ = "things"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    size: Mapped[int | None]


def loaded_thing() -> tuple[Session, Thing]:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    session = Session(engine, expire_on_commit=False)
    thing = Thing(name="loaded", size=1)
    session.add(thing)
    session.commit()
    return session, thing


def test_committed_state_still_holds_the_loaded_value_of_a_changed_attribute():
    session, thing = loaded_thing()
    with session:
        thing.name = "changed"
        state = inspect(thing)
        assert isinstance(state, InstanceState)
        assert hasattr(state, "committed_state"), \
            "SQLAlchemy's InstanceState has no committed_state any more"
        assert state.committed_state == {"name": "loaded"}, \
            "SQLAlchemy's InstanceState.committed_state no longer holds the loaded value"
        assert state.dict["name"] == "changed"
        session.flush()
        assert state.committed_state == {}, "committed_state is no longer cleared by a flush"


def test_committed_state_marks_an_attribute_that_had_no_loaded_value():
    thing = Thing(name="new")
    value = inspect(thing).committed_state.get("name", attributes.NO_VALUE)
    assert value in (attributes.NO_VALUE, attributes.NEVER_SET), \
        f"committed_state of a new record holds {value!r}, not NO_VALUE or NEVER_SET"


def test_the_facade_reads_a_changed_record_back_as_the_database_holds_it():
    session, thing = loaded_thing()
    with session:
        thing.name, thing.size = "changed", 2
        assert _committed_values(thing) == {"id": thing.id, "name": "loaded", "size": 1}
