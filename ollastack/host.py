"""``Host``: one machine a stack converges, as every provider hands it on.

Hosts are stored in the state file as JSON records (``to_record``) and read back with
``from_record``, which accepts every record an older ollastack wrote (a missing user is root, a
missing port 22).

Example::

    host = Host("demo-vm", "192.0.2.30", user="ollastack", tls_names=("demo-chat.westeurope.cloudapp.azure.com",))
    host.url_name                          # "demo-chat.westeurope.cloudapp.azure.com"
    Host.from_record(host.to_record()) == host
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SSH_PORT = 22


@dataclass(frozen=True)
class Host:
    """A host pyinfra logs in to: ``user@address:port``; ``tls_names`` are the names its certificate serves.

    ``private_address``: where the stack's other hosts reach it ("": ``address``); ``jump``: the host
    SSH goes through to reach it (a cloud fleet's backend, which has no public address, through the gateway).
    """

    name: str
    address: str
    user: str = "root"
    port: int = SSH_PORT
    tls_names: tuple[str, ...] = ()
    private_address: str = ""
    jump: Host | None = None

    @classmethod
    def from_record(cls, record: Host | Mapping[str, Any]) -> Host:
        """A Host from a state-file record or a provider's dict; keys it does not know are ignored.

        Example: ``Host.from_record({"name": "h", "address": "192.0.2.7"}).port == 22``
        """
        if isinstance(record, Host):
            return record
        jump = record.get("jump")
        return cls(name=str(record["name"]), address=str(record["address"]), user=str(record.get("user") or "root"),
                   port=int(record.get("port") or SSH_PORT), tls_names=tuple(record.get("tls_names") or ()),
                   private_address=str(record.get("private_address") or ""),
                   jump=cls.from_record(jump) if jump else None)

    def to_record(self) -> dict[str, Any]:
        """The state file's JSON form: the keys earlier versions wrote, ``port``, ``private_address`` and
        ``jump`` only when set."""
        record: dict[str, Any] = {"name": self.name, "address": self.address, "user": self.user,
                                  "tls_names": list(self.tls_names)}
        if self.port != SSH_PORT:
            record["port"] = self.port
        if self.private_address:
            record["private_address"] = self.private_address
        if self.jump is not None:
            record["jump"] = self.jump.to_record()
        return record

    @property
    def url_name(self) -> str:
        """The name the host is reached by over HTTPS when the stack sets no ``tls.domain``."""
        return (self.tls_names or (self.address,))[0]
