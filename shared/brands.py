"""A brand's effective settings (the app's, with the brand's overrides on top), cached per process.

Ingestion (alert thresholds) and car requests (Teams on or off, the moving speed) ask per car, so the brand
document is read at most once per brand every CACHE_SECONDS per instance. A change made through the API reaches
every instance within that time; a brand that cannot be read (missing, or overrides no longer valid) falls back
to the app's settings and says so once in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

from shared.containers import TENANCY
from shared.errors import RequestError
from shared.stores.base import DocumentStore

if TYPE_CHECKING:
    from shared.settings_model import BrandSettings

log = logging.getLogger(__name__)
CACHE_SECONDS: Final = 300.0
BRAND_DOC_ID: Final = "brand"  # a brand's configuration: `tenancy` container, partition = the brand id


class BrandConfigs:
    def __init__(
        self,
        store: DocumentStore,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.environ = environ
        self.clock = clock
        self._cache: dict[str | None, tuple[float, BrandSettings]] = {}

    async def get(self, brand_id: str | None) -> BrandSettings:
        """The settings for a car of this brand (None: a car registered in no brand gets the app's)."""
        now = self.clock()
        cached = self._cache.get(brand_id)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            return cached[1]
        from shared.settings_model import brand_settings

        overrides: Mapping[str, object] = {}
        if brand_id is not None:
            stored = await self.store.read(TENANCY, brand_id, BRAND_DOC_ID)
            raw = stored.document.get("settings") if stored else None
            overrides = raw if isinstance(raw, dict) else {}
        try:
            settings = brand_settings(overrides, self.environ)
        except RequestError:
            log.warning("brand %s: its setting overrides are invalid; using the app's settings", brand_id)
            settings = brand_settings(None, self.environ)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[brand_id] = (now, settings)
        return settings
