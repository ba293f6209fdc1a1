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
    """A host pyinfra logs in to: ``user@address:port``; ``tls_names`` are the names its certificate serves."""

    name: str
    address: str
    user: str = "root"
    port: int = SSH_PORT
    tls_names: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, record: Host | Mapping[str, Any]) -> Host:
        """A Host from a state-file record or a provider's dict; keys it does not know are ignored.

        Example: ``Host.from_record({"name": "h", "address": "192.0.2.7"}).port == 22``
        """
        if isinstance(record, Host):
            return record
        return cls(name=str(record["name"]), address=str(record["address"]), user=str(record.get("user") or "root"),
                   port=int(record.get("port") or SSH_PORT), tls_names=tuple(record.get("tls_names") or ()))

    def to_record(self) -> dict[str, Any]:
        """The state file's JSON form: the keys earlier versions wrote, ``port`` only when it is not 22."""
        record: dict[str, Any] = {"name": self.name, "address": self.address, "user": self.user,
                                  "tls_names": list(self.tls_names)}
        if self.port != SSH_PORT:
            record["port"] = self.port
        return record

    @property
    def url_name(self) -> str:
        """The name the host is reached by over HTTPS when the stack sets no ``tls.domain``."""
        return (self.tls_names or (self.address,))[0]
