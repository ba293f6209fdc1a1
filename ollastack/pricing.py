"""What a stack's cloud resources cost: one ``Price`` per plan, each line per hour and per 30-day month.

Azure's list prices come from the Retail Prices API (no sign-in); Alibaba's from ECS ``DescribePrice``
(in ``ollastack.cloud.alibaba_preview``). A price that cannot be found is a warning on the ``Price``,
never an exception: the plan still shows the resources.

Example::

    price = azure_price(stack)
    price.hourly, price.monthly, price.currency     # 0.531, 382.32, "USD"
    price.warnings                                 # [] or ["price: no Linux pay-as-you-go price for ..."]
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from ollastack.cloud.errors import one_line
from ollastack.config import Stack

# Not a user setting: the tests point it at a local stand-in of the Retail Prices API.
AZURE_PRICES_ENV = "OLLASTACK_AZURE_PRICES_URL"
AZURE_PRICES_URL = "https://prices.azure.com/api/retail/prices"
HOURS_PER_MONTH = 720          # a 30-day month
AZURE_PAGES_MAX = 20           # the filters select a handful of meters; more pages mean a filter went wrong
# Standard SSD managed disks are billed by tier: the smallest tier holding the disk's size (GiB).
STANDARD_SSD_TIERS = ((4, "E1"), (8, "E2"), (16, "E3"), (32, "E4"), (64, "E6"), (128, "E10"), (256, "E15"),
                      (512, "E20"), (1024, "E30"), (2048, "E40"), (4096, "E50"))
# Meters other than Linux pay-as-you-go (the Retail Prices API lists them with the same armSkuName).
SKIPPED_METERS = ("Windows", "Spot", "Low Priority")


@dataclass
class PriceLine:
    """One priced resource; ``hourly`` None: no price found for it."""

    what: str
    hourly: float | None
    note: str = ""

    @property
    def monthly(self) -> float | None:
        return None if self.hourly is None else self.hourly * HOURS_PER_MONTH


@dataclass
class Price:
    """The priced lines of a stack, their currency and where the prices come from."""

    currency: str
    source: str
    lines: list[PriceLine] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every line has a price (``hourly`` is then the whole hourly cost)."""
        return bool(self.lines) and all(line.hourly is not None for line in self.lines)

    @property
    def hourly(self) -> float | None:
        """The sum of the lines found; None when none was found."""
        found = [line.hourly for line in self.lines if line.hourly is not None]
        return sum(found) if found else None

    @property
    def monthly(self) -> float | None:
        return None if self.hourly is None else self.hourly * HOURS_PER_MONTH

    def summary(self) -> str:
        """``0.5310 USD/hour, 382.32 USD/month (Azure Retail Prices API)``; "no price found" if none."""
        if self.hourly is None:
            return f"no price found ({self.source})"
        partial = "" if self.complete else " (partial: some prices not found)"
        return f"{self.hourly:.4f} {self.currency}/hour, {self.monthly:.2f} {self.currency}/month{partial} ({self.source})"

    def to_json(self) -> dict[str, Any]:
        return {"currency": self.currency, "source": self.source, "hourly": self.hourly, "monthly": self.monthly,
                "complete": self.complete, "warnings": self.warnings,
                "lines": [{"what": line.what, "hourly": line.hourly, "monthly": line.monthly, "note": line.note}
                          for line in self.lines]}


class PriceNotFound(Exception):
    """No usable price: the message is the warning line (it names the size and the source)."""


class PriceApiError(PriceNotFound):
    """The price API itself failed: asking it for the other lines would only fail again."""


def azure_prices_url() -> str:
    return os.environ.get(AZURE_PRICES_ENV) or AZURE_PRICES_URL


def retail_items(filters: dict[str, str], url: str | None = None, currency: str = "USD") -> list[dict[str, Any]]:
    """Every item of the Retail Prices API matching ``filters`` (``field eq 'value'`` each), all pages.

    Pages are followed through ``NextPageLink`` only while it stays on the API's own host. Raises
    PriceNotFound (one line) when the API cannot be read.

    Example: ``retail_items({"serviceName": "Virtual Machines", "armRegionName": "westeurope"})``
    """
    base = url or azure_prices_url()
    query = " and ".join(f"{name} eq '{value}'" for name, value in filters.items())
    origin = urlsplit(base)[:2]
    items: list[dict[str, Any]] = []
    link: str | None = base
    params: dict[str, str] | None = {"currencyCode": f"'{currency}'", "$filter": query}
    for _ in range(AZURE_PAGES_MAX):
        if link is None:
            return items
        if urlsplit(link)[:2] != origin:
            raise PriceApiError(f"price: the Azure Retail Prices API sent a next page on another host ({link})")
        try:
            reply = requests.get(link, params=params, timeout=20)
            reply.raise_for_status()
            page = reply.json()
        except (requests.RequestException, ValueError) as exc:
            raise PriceApiError(f"price: Azure Retail Prices API ({base}) failed: {one_line(exc, 160)}") from None
        items += page.get("Items", [])
        link, params = page.get("NextPageLink"), None
    raise PriceApiError(f"price: Azure Retail Prices API ({base}) sent more than {AZURE_PAGES_MAX} pages")


def _pay_as_you_go(items: list[dict[str, Any]], unit: str) -> dict[str, Any] | None:
    """The newest Linux pay-as-you-go meter in ``unit`` (Windows, Spot and Low Priority skipped)."""
    usable = [i for i in items if i.get("unitOfMeasure") == unit and i.get("type", "Consumption") == "Consumption"
              and not any(word in f"{i.get('productName', '')} {i.get('skuName', '')} {i.get('meterName', '')}"
                          for word in SKIPPED_METERS)
              and not i.get("tierMinimumUnits")]
    return max(usable, key=lambda i: i.get("effectiveStartDate", "")) if usable else None


def standard_ssd_tier(size_gb: int) -> str:
    """The Standard SSD tier billed for a disk of ``size_gb`` GiB: 64 -> "E6"."""
    return next((tier for limit, tier in STANDARD_SSD_TIERS if size_gb <= limit), STANDARD_SSD_TIERS[-1][1])


def azure_price(stack: Stack) -> Price:
    """Hourly list prices of the VM size, its Standard SSD OS disk and a Standard static public IP.

    Example: ``azure_price(stack).lines[0]`` -> PriceLine("VM Standard_NC4as_T4_v3", 0.526)
    """
    az = stack.azure
    base = azure_prices_url()
    price = Price(az.price_currency, f"Azure Retail Prices API, {az.location}, list prices without discounts")
    tier = standard_ssd_tier(az.os_disk_gb)
    wanted = (
        (f"VM {az.vm_size}", "1 Hour", 1.0, {"serviceName": "Virtual Machines", "armSkuName": az.vm_size}),
        (f"OS disk {tier} Standard SSD ({az.os_disk_gb} GiB)", "1/Month", 1 / HOURS_PER_MONTH,
         {"serviceName": "Storage", "skuName": f"{tier} LRS"}),
        ("public IP (Standard, static)", "1 Hour", 1.0,
         {"serviceName": "Virtual Network", "meterName": "Standard IPv4 Static Public IP"}),
    )
    failed = False
    for what, unit, per_hour, filters in wanted:
        if failed:
            price.lines.append(PriceLine(what, None))
            continue
        query = {"serviceName": filters.pop("serviceName"), "armRegionName": az.location, **filters,
                 "priceType": "Consumption"}
        try:
            item = _pay_as_you_go(retail_items(query, base, az.price_currency), unit)
            if item is None:
                raise PriceNotFound(f"price: no Linux pay-as-you-go price for {what} in {az.location} "
                                    f"in the Azure Retail Prices API ({base})")
        except PriceNotFound as exc:
            price.warnings.append(str(exc))
            price.lines.append(PriceLine(what, None))
            failed = isinstance(exc, PriceApiError)
            continue
        price.currency = item.get("currencyCode", price.currency)
        price.lines.append(PriceLine(what, float(item["retailPrice"]) * per_hour, item.get("meterName", "")))
    vm, disk = price.lines[0], price.lines[1]
    price.lines += backend_lines(stack, [vm, disk])
    return price


def backend_lines(stack: Stack, per_host: list[PriceLine]) -> list[PriceLine]:
    """A fleet's backends priced as the gateway's host lines (the same size and disk, no public address).

    Example: ``backend_lines(stack, [vm, disk])`` -> [PriceLine("backend 1: VM Standard_NC4as_T4_v3", 0.526), ...]
    """
    return [PriceLine(f"backend {index}: {line.what}", line.hourly, line.note)
            for index in range(1, stack.fleet.backends + 1) for line in per_host]
