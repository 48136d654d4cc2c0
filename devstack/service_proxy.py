"""A plain-HTTP fault proxy between the functions and the local IoT Hub's service API (C2D, twins, registry).

LocalIoTHubGateway (shared/iothub/local_gateway.py) reaches the hub through LOCAL_IOTHUB_SERVICE_URL; the
stack points that setting at this proxy, so the same faults as for Cosmos DB (devstack/faults.py) can be
injected into cloud-to-device replies and twin patches. Reads are GETs, writes everything else; the device id
in the path is the key `key_prefix` matches. Errors come in IoT Hub's REST shape (`{"Message": "ErrorCode:..."}`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from aiohttp import web

from devstack.faults import Operation
from devstack.http_proxy import ReverseProxy

DEVICE_IN_PATH: Final = re.compile(r"^/(?:devices|twins)/([^/]+)")
IOTHUB_CODES: Final = {429: "ThrottlingException", 503: "ServiceUnavailable"}


class IoTHubServiceProxy(ReverseProxy):
    def classify(self, request: web.Request) -> tuple[Operation, str | None] | None:
        match = DEVICE_IN_PATH.match(request.path)
        device = match[1] if match else None
        return (Operation.READ if request.method == "GET" else Operation.WRITE), device

    def error_answer(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        error_code = IOTHUB_CODES.get(status, code)
        body = {"Message": f"ErrorCode:{error_code};{message}", "ExceptionMessage": message}
        return web.json_response(body, status=status, headers=dict(headers or {}))
