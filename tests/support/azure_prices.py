"""A stand-in for the Azure Retail Prices API (``GET /api/retail/prices``), over HTTPS on 127.0.0.1.

The real API's JSON shape: ``{"BillingCurrency", "CustomerEntityId", "CustomerEntityType", "Items": [...],
"NextPageLink", "Count"}``, items with ``retailPrice``, ``unitOfMeasure``, ``armSkuName``, ``meterName``,
``productName``, ``skuName``, ``type``... ``$filter`` is honoured (``field eq 'value'`` clauses joined by
``and``; field names case-insensitive, values exact, an unknown field refused with 400), and answers are
paged (``page_size`` items, ``NextPageLink`` with ``$skip``) so a client reading one page misses items;
``currencyCode='EUR'`` converts (``RATES``), an unknown code is refused with 400.
Its catalogue has what makes choosing a meter hard: Windows, Spot and Low Priority meters under the
same ``armSkuName``, DevTest and Reservation prices, disk operation meters beside the disk meters.

Example::

    with RetailPrices(trustme.CA()) as prices:
        os.environ["OLLASTACK_AZURE_PRICES_URL"] = prices.url
        prices.fail(500)                       # the next request answers 500
        prices.filters                         # every $filter received
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from tests.support.serve import Server, ca_context, serve_tls

CLAUSE_RE = re.compile(r"^\s*(?P<field>[A-Za-z]+) eq '(?P<value>[^']*)'\s*$")
FIELDS = ("currencyCode", "tierMinimumUnits", "retailPrice", "unitPrice", "armRegionName", "location",
          "effectiveStartDate", "meterId", "meterName", "productId", "skuId", "productName", "skuName",
          "serviceName", "serviceId", "serviceFamily", "unitOfMeasure", "type", "isPrimaryMeterRegion",
          "armSkuName", "priceType")
# (armSkuName, meter/sku name, series, Linux price per hour) in westeurope.
VM_PRICES = [("Standard_NC4as_T4_v3", "NC4as T4 v3", "NCasT4_v3", 0.526),
             ("Standard_NC8as_T4_v3", "NC8as T4 v3", "NCasT4_v3", 0.752),
             ("Standard_NV6ads_A10_v5", "NV6ads A10 v5", "NVadsA10v5", 0.454),
             ("Standard_D2s_v5", "D2s v5", "Dsv5", 0.096)]
DISK_PRICES = [("E4", 2.40), ("E6", 4.80), ("E10", 9.60)]     # Standard SSD LRS, per month
PUBLIC_IP_HOURLY = 0.005
# currencyCode values the stand-in converts to (the real API takes the ISO codes of its billing currencies).
RATES = {"USD": 1.0, "EUR": 0.9, "GBP": 0.8, "JPY": 150.0}


def _item(**fields: Any) -> dict[str, Any]:
    base = {"currencyCode": "USD", "tierMinimumUnits": 0.0, "armRegionName": "westeurope", "location": "EU West",
            "effectiveStartDate": "2024-01-01T00:00:00Z", "meterId": "00000000-0000-0000-0000-000000000000",
            "productId": "DZH318Z0BQ4L", "skuId": "DZH318Z0BQ4L/00", "serviceId": "DZH313Z7MMC8",
            "isPrimaryMeterRegion": True, "armSkuName": "", "type": "Consumption"}
    base.update(fields)
    base["unitPrice"] = base["retailPrice"]
    return base


def catalogue() -> list[dict[str, Any]]:
    """The price list the stand-in serves (westeurope, plus an eastus copy the region filter must drop)."""
    items = []
    for arm, name, series, price in VM_PRICES:
        vm = {"serviceName": "Virtual Machines", "serviceFamily": "Compute", "armSkuName": arm, "unitOfMeasure": "1 Hour"}
        product = f"Virtual Machines {series} Series"
        items += [
            _item(**vm, retailPrice=price * 1.6, meterName=name, skuName=name, productName=f"{product} Windows"),
            _item(**vm, retailPrice=round(price * 0.2, 4), meterName=f"{name} Spot", skuName=f"{name} Spot",
                  productName=product),
            _item(**vm, retailPrice=round(price * 0.2, 4), meterName=f"{name} Low Priority",
                  skuName=f"{name} Low Priority", productName=product),
            _item(**vm, retailPrice=price * 0.9, meterName=name, skuName=name, productName=product, type="DevTestConsumption"),
            _item(**vm, retailPrice=price * 5000, meterName=name, skuName=name, productName=product, type="Reservation",
                  reservationTerm="1 Year"),
            _item(**vm, retailPrice=round(price * 0.98, 4), meterName=name, skuName=name, productName=product,
                  effectiveStartDate="2023-01-01T00:00:00Z"),
            _item(**vm, retailPrice=price, meterName=name, skuName=name, productName=product),
            _item(**vm, retailPrice=price * 1.1, meterName=name, skuName=name, productName=product,
                  armRegionName="eastus", location="US East"),
        ]
    for tier, monthly in DISK_PRICES:
        disk = {"serviceName": "Storage", "serviceFamily": "Storage", "productName": "Standard SSD Managed Disks",
                "skuName": f"{tier} LRS"}
        items += [_item(**disk, retailPrice=monthly, meterName=f"{tier} LRS Disk", unitOfMeasure="1/Month"),
                  _item(**disk, retailPrice=0.002, meterName=f"{tier} LRS Disk Operations", unitOfMeasure="10K")]
    items += [_item(serviceName="Virtual Network", serviceFamily="Networking", productName="IP Addresses",
                    skuName="Standard", meterName="Standard IPv4 Static Public IP", unitOfMeasure="1 Hour",
                    retailPrice=PUBLIC_IP_HOURLY),
              _item(serviceName="Virtual Network", serviceFamily="Networking", productName="IP Addresses",
                    skuName="Basic", meterName="Basic IPv4 Static Public IP", unitOfMeasure="1 Hour",
                    retailPrice=0.0036)]
    for item in items:
        item["priceType"] = item["type"]
    return items


class RetailPrices:
    """The stand-in on ``https://127.0.0.1:<port>/api/retail/prices``; a context manager."""

    def __init__(self, ca, page_size: int = 2):
        self.ca = ca
        self.page_size = page_size
        self.items = catalogue()
        self.filters: list[str] = []
        self.failures: list[int] = []
        self.lock = threading.Lock()
        self._server: Server | None = None

    def __enter__(self) -> "RetailPrices":
        self._server = serve_tls(type("Handler", (_Handler,), {"prices": self}), ca_context(self.ca))
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return f"{self._server.url}/api/retail/prices"

    def fail(self, status: int = 500, times: int = 1) -> None:
        with self.lock:
            self.failures += [status] * times

    def select(self, text: str) -> list[dict[str, Any]]:
        """The items a ``$filter`` selects; ValueError for a filter the API would refuse."""
        clauses = [CLAUSE_RE.match(c) for c in re.split(r"\s+and\s+", text, flags=re.IGNORECASE)] if text else []
        fields = {f.lower(): f for f in FIELDS}
        wanted = []
        for clause in clauses:
            if clause is None or clause["field"].lower() not in fields:
                raise ValueError(f"Invalid OData filter: {text}")
            wanted.append((fields[clause["field"].lower()], clause["value"]))
        return [i for i in self.items if all(str(i.get(f)) == v for f, v in wanted)]


class _Handler(BaseHTTPRequestHandler):
    prices: RetailPrices
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        prices = self.prices
        url = urlsplit(self.path)
        if url.path != "/api/retail/prices":
            return self._reply(404, {"Error": {"Code": "NotFound", "Message": f"{url.path} not found"}})
        query = parse_qs(url.query)
        text = query.get("$filter", [""])[0]
        with prices.lock:
            prices.filters.append(text)
            status = prices.failures.pop(0) if prices.failures else 0
        if status:
            return self._reply(status, {"Error": {"Code": "InternalServerError", "Message": "Injected failure."}})
        try:
            found = prices.select(text)
        except ValueError as exc:
            return self._reply(400, {"Error": {"Code": "BadRequest", "Message": str(exc)}})
        currency = query.get("currencyCode", ["'USD'"])[0].strip("'")
        if currency not in RATES:
            return self._reply(400, {"Error": {"Code": "BadRequest", "Message": f"Invalid currency code {currency}"}})
        found = [{**i, "currencyCode": currency, "retailPrice": i["retailPrice"] * RATES[currency],
                  "unitPrice": i["unitPrice"] * RATES[currency]} for i in found]
        skip = int(query.get("$skip", ["0"])[0])
        page = found[skip:skip + prices.page_size]
        more = skip + prices.page_size < len(found)
        link = (f"{prices.url}?currencyCode={quote(repr(currency))}&$filter={quote(text)}&$skip={skip + prices.page_size}"
                if more else None)
        self._reply(200, {"BillingCurrency": currency, "CustomerEntityId": "Default", "CustomerEntityType": "Retail",
                          "Items": page, "NextPageLink": link, "Count": len(page)})
