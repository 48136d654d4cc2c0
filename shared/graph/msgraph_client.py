"""GraphClient on msgraph-sdk (async, Kiota): the one implementation used in Azure, the sandbox and the tests.

The SDK is imported here only, and this module is imported only when a Graph call is about to happen (cold
start: the SDK is ~400 MB and takes ~0.5 s to import). Pitfalls avoided (see ../shared/FINDINGS.md):
- delta paging uses `with_url(link)` page by page, because the SDK's PageIterator drops the deltaLink;
- `with_url()` keeps no headers, so `Prefer` is sent again on every page;
- the SDK's retry handler retries 429/503/504 for every method, POST included, and honours `Retry-After`. That is
  safe for GET, PATCH, DELETE and createOrGet (idempotent by its externalId), but not for `sendMail`,
  `POST /subscriptions` and `.../reauthorize`: a 503/504 may come after Graph did the work, and a retry would
  send the mail twice or leave a second subscription. Those three go out with the SDK's retries off
  (`_no_sdk_retry`); only a 429 with `Retry-After` (Graph refused the request before doing anything) is retried,
  here, at most `max_retries` times and for at most MAX_POST_RETRY_AFTER seconds each. Any other failure is the
  caller's to handle.

Two kinds, one class: `create` (application permission, `/users/{id}/...`, the managed identity's token) and
`create_delegated` (a signed-in driver, `/me/...`, that driver's token, read per call from
`shared.graph.access.acting_for`). The SDK's `client.me` is `/users/me-token-to-replace`, which its
UrlReplaceHandler middleware turns into `/me` on the wire, so both kinds share the same request builders.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from kiota_abstractions.authentication import AuthenticationProvider
from kiota_abstractions.request_information import RequestInformation

from shared.device_messages import canonical_time
from shared.graph.access import DelegatedTokens, acting_for, current_account
from shared.graph.base import GraphClient
from shared.graph.endpoints import GraphEndpoint, graph_endpoint, is_loopback_url
from shared.graph.exceptions import (
    GraphError,
    GraphForbiddenError,
    GraphNotFoundError,
    ReauthRequiredError,
    SyncStateGoneError,
    ThrottledError,
)
from shared.graph.types import DeltaPage, GraphEvent, OnlineMeeting, Subscription

if TYPE_CHECKING:
    from msgraph.graph_service_client import GraphServiceClient

# Graph answers these for an expired or unknown delta token (besides plain 410 Gone).
SYNC_STATE_CODES: Final = frozenset({"syncStateNotFound", "syncStateInvalid", "resyncRequired"})
CHANGE_TYPES: Final = "created,updated,deleted"
MAX_POST_RETRY_AFTER: Final = 30.0  # a non-idempotent POST throttled for longer raises ThrottledError at once
T = TypeVar("T")


__all__ = ["DelegatedAuthenticationProvider", "MsGraphClient", "is_loopback_url"]


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute URL, the default port made explicit; None if it has no host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not host or scheme not in ("http", "https"):
        return None
    return scheme, host, port if port is not None else (443 if scheme == "https" else 80)


class DelegatedAuthenticationProvider(AuthenticationProvider):
    """Attaches the token of the account the call in flight is for (`acting_for`), and only to the vetted Graph
    origin: https on the cloud's host, or exactly the loopback sandbox's origin (which must see delegated tokens
    to know who `/me` is). A link Graph (or anything posing as it) hands out for another host gets no token."""

    def __init__(self, tokens: DelegatedTokens, endpoint: GraphEndpoint) -> None:
        self.tokens = tokens
        origin = _origin(endpoint.base_url)
        assert origin is not None  # a vetted endpoint always has one
        self.origin = origin

    def allows(self, url: str) -> bool:
        return _origin(url) == self.origin

    async def authenticate_request(
        self, request: RequestInformation, additional_authentication_context: dict[str, Any] | None = None
    ) -> None:
        if not self.allows(request.url):
            return
        user_id = current_account()
        if user_id is None:  # a programming error: a delegated call outside acting_for
            raise ReauthRequiredError("a delegated Graph call without an account")
        token = await self.tokens.access_token(user_id)
        if request.headers.contains("Authorization"):
            request.headers.remove("Authorization")
        request.headers.add("Authorization", f"Bearer {token}")


class MsGraphClient(GraphClient):
    """One instance (one connection pool, one token cache) per process: see `shared.graph.runtime`."""

    def __init__(
        self,
        client: GraphServiceClient,
        credential: Any = None,
        endpoint: GraphEndpoint | None = None,
        auth: Any = None,
        *,
        delegated: bool = False,
        max_retries: int = 3,
    ) -> None:
        self._client = client
        self._credential = credential
        self.endpoint = endpoint  # the vetted GRAPH_BASE_URL and its cloud
        self.auth = auth  # the Kiota authentication provider (tests check which hosts get which token)
        self.delegated = delegated  # True: `/me` with the driver's token of each call
        self.max_retries = max_retries  # 429 retries of the non-idempotent POSTs (`_post_once`)

    @classmethod
    def create(
        cls, base_url: str | None, client_id: str | None, max_retries: int = 3, credential: Any = None
    ) -> MsGraphClient:
        """Real tokens from `DefaultAzureCredential` (managed identity in Azure, client secret or developer login
        locally), for the scope and authority of the cloud GRAPH_BASE_URL names; no token at all only when it is a
        loopback address (the sandbox, tests). Any other host raises ConfigurationError here, before a client or a
        credential exists (shared/graph/endpoints.py). `credential` replaces DefaultAzureCredential (tests)."""
        from kiota_abstractions.authentication import AnonymousAuthenticationProvider

        endpoint = graph_endpoint(base_url)
        auth: AuthenticationProvider
        if endpoint.cloud is None:
            auth = AnonymousAuthenticationProvider()
        else:
            from kiota_authentication_azure.azure_identity_authentication_provider import (
                AzureIdentityAuthenticationProvider,
            )

            if credential is None:
                from azure.identity.aio import DefaultAzureCredential

                credential = DefaultAzureCredential(
                    managed_identity_client_id=client_id, authority=endpoint.cloud.authority
                )
            # allowed_hosts: the token is attached only to requests for this host, whatever link Graph hands out.
            auth = AzureIdentityAuthenticationProvider(
                credential, scopes=[endpoint.cloud.scope], allowed_hosts=[endpoint.cloud.host]
            )
        return cls(_service_client(endpoint, auth, max_retries), credential, endpoint, auth, max_retries=max_retries)

    @classmethod
    def create_delegated(cls, base_url: str | None, tokens: DelegatedTokens, max_retries: int = 3) -> MsGraphClient:
        """The client for signed-in drivers: `/me/...` with the token `tokens` gives for the account of each
        call. GRAPH_BASE_URL is vetted as for `create`; unlike application tokens, delegated tokens are sent to a
        loopback sandbox (it verifies them and takes `/me` from their `oid`)."""
        endpoint = graph_endpoint(base_url)
        auth = DelegatedAuthenticationProvider(tokens, endpoint)
        client = _service_client(endpoint, auth, max_retries)
        return cls(client, None, endpoint, auth, delegated=True, max_retries=max_retries)

    def _mailbox(self, user_id: str) -> Any:
        """The request builder for the user's mailbox: `/me` (delegated) or `/users/{id}`."""
        return self._client.me if self.delegated else self._client.users.by_user_id(user_id)

    @contextlib.contextmanager
    def _as(self, user_id: str) -> Iterator[None]:
        """Delegated: the calls in the block carry `user_id`'s token (a no-op for application permission)."""
        if not self.delegated:
            yield
            return
        with acting_for(user_id):
            yield

    async def _post_once(self, send: Callable[[Any], Awaitable[T]]) -> T:
        """A non-idempotent POST: `send(config)` with the SDK's retries off; only a 429 with a `Retry-After` of
        at most MAX_POST_RETRY_AFTER seconds is sent again (Graph did nothing), at most `max_retries` times."""
        from kiota_abstractions.api_error import APIError
        from kiota_abstractions.base_request_configuration import RequestConfiguration

        attempt = 0
        while True:
            config: RequestConfiguration[Any] = RequestConfiguration(options=[_no_sdk_retry()])
            try:
                return await send(config)
            except APIError as exc:
                delay = _retry_after(exc) if exc.response_status_code == 429 else None
                if delay is None or delay > MAX_POST_RETRY_AFTER or attempt >= self.max_retries:
                    raise
                attempt += 1
                await asyncio.sleep(delay)

    def _error(self, exc: Exception, what: str) -> GraphError:
        error = _graph_error(exc, what)
        if self.delegated and error.status == 401 and not isinstance(error, ReauthRequiredError):
            return ReauthRequiredError(f"{what}: Graph refused the driver's token ({error.code or 401})")
        return error

    async def calendar_delta(
        self,
        user_id: str,
        *,
        start: str | None = None,
        end: str | None = None,
        link: str | None = None,
        page_size: int = 50,
    ) -> DeltaPage:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.users.item.calendar_view.delta.delta_request_builder import DeltaRequestBuilder

        builder = self._mailbox(user_id).calendar_view.delta
        config: RequestConfiguration[Any] = RequestConfiguration()
        # Immutable ids survive moves between folders; UTC times need no Windows time zone table.
        for value in ('IdType="ImmutableId"', 'outlook.timezone="UTC"', f"odata.maxpagesize={page_size}"):
            config.headers.add("Prefer", value)
        if link:
            builder = builder.with_url(link)
        else:
            config.query_parameters = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                start_date_time=start, end_date_time=end
            )
        try:
            with self._as(user_id):
                response = await builder.get(request_configuration=config)
        except Exception as exc:
            raise self._error(exc, f"calendarView delta for {user_id}") from exc
        if response is None:
            raise GraphError("calendarView delta: empty response")
        page = DeltaPage(next_link=response.odata_next_link, delta_link=response.odata_delta_link)
        for item in response.value or []:
            if not item.id:
                continue
            if (item.additional_data or {}).get("@removed") is not None:
                page.removed.append(item.id)
            else:
                page.events.append(_event(item))
        return page

    async def create_or_get_meeting(
        self, user_id: str, external_id: str, subject: str, start: str, end: str
    ) -> OnlineMeeting:
        from msgraph.generated.users.item.online_meetings.create_or_get.create_or_get_post_request_body import (
            CreateOrGetPostRequestBody,
        )

        body = CreateOrGetPostRequestBody(
            external_id=external_id,
            subject=subject,
            start_date_time=dt.datetime.fromisoformat(start),
            end_date_time=dt.datetime.fromisoformat(end),
        )
        try:
            with self._as(user_id):
                meeting = await self._mailbox(user_id).online_meetings.create_or_get.post(body)
        except Exception as exc:
            raise self._error(exc, f"onlineMeetings/createOrGet for {user_id}") from exc
        if meeting is None or not meeting.id or not meeting.join_web_url:
            raise GraphError("createOrGet returned no meeting id or joinWebUrl")
        ids, audio = meeting.join_meeting_id_settings, meeting.audio_conferencing
        return OnlineMeeting(
            id=meeting.id,
            join_web_url=meeting.join_web_url,
            subject=meeting.subject,
            join_meeting_id=ids.join_meeting_id if ids else None,
            passcode=ids.passcode if ids else None,
            toll_number=audio.toll_number if audio else None,
            conference_id=audio.conference_id if audio else None,
        )

    async def create_subscription(
        self, user_id: str, resource: str, notification_url: str, client_state: str, expires_at: str
    ) -> Subscription:
        from msgraph.generated.models.subscription import Subscription as GraphSubscription

        body = GraphSubscription(
            change_type=CHANGE_TYPES,
            notification_url=notification_url,
            lifecycle_notification_url=notification_url,
            resource=resource,
            expiration_date_time=dt.datetime.fromisoformat(expires_at),
            client_state=client_state,
        )
        try:
            with self._as(user_id):
                created = await self._post_once(lambda config: self._client.subscriptions.post(body, config))
        except Exception as exc:
            raise self._error(exc, f"create subscription on {resource}") from exc
        return _subscription(created, resource, expires_at)

    async def renew_subscription(self, user_id: str, subscription_id: str, expires_at: str) -> Subscription:
        from msgraph.generated.models.subscription import Subscription as GraphSubscription

        body = GraphSubscription(expiration_date_time=dt.datetime.fromisoformat(expires_at))
        try:
            with self._as(user_id):
                renewed = await self._client.subscriptions.by_subscription_id(subscription_id).patch(body)
        except Exception as exc:
            raise self._error(exc, f"renew subscription {subscription_id}") from exc
        return _subscription(renewed, "", expires_at, subscription_id)

    async def reauthorize_subscription(self, user_id: str, subscription_id: str) -> None:
        try:
            with self._as(user_id):
                reauthorize = self._client.subscriptions.by_subscription_id(subscription_id).reauthorize
                await self._post_once(lambda config: reauthorize.post(config))
        except Exception as exc:
            raise self._error(exc, f"reauthorize subscription {subscription_id}") from exc

    async def delete_subscription(self, user_id: str, subscription_id: str) -> None:
        try:
            with self._as(user_id):
                await self._client.subscriptions.by_subscription_id(subscription_id).delete()
        except Exception as exc:
            error = self._error(exc, f"delete subscription {subscription_id}")
            if not isinstance(error, GraphNotFoundError):
                raise error from exc

    async def delete_meeting(self, user_id: str, meeting_id: str) -> bool:
        try:
            with self._as(user_id):
                await self._mailbox(user_id).online_meetings.by_online_meeting_id(meeting_id).delete()
        except Exception as exc:
            error = self._error(exc, f"delete onlineMeeting of {user_id}")
            if isinstance(error, GraphNotFoundError):
                return False
            raise error from exc
        return True

    async def send_mail(self, user_id: str, to: str, subject: str, text: str) -> None:
        from msgraph.generated.models.body_type import BodyType
        from msgraph.generated.models.email_address import EmailAddress
        from msgraph.generated.models.item_body import ItemBody
        from msgraph.generated.models.message import Message
        from msgraph.generated.models.recipient import Recipient
        from msgraph.generated.users.item.send_mail.send_mail_post_request_body import SendMailPostRequestBody

        message = Message(
            subject=subject,
            body=ItemBody(content_type=BodyType.Text, content=text),
            to_recipients=[Recipient(email_address=EmailAddress(address=to))],
        )
        body = SendMailPostRequestBody(message=message, save_to_sent_items=True)
        try:
            with self._as(user_id):
                send_mail = self._mailbox(user_id).send_mail
                await self._post_once(lambda config: send_mail.post(body, config))
        except Exception as exc:
            raise self._error(exc, f"sendMail for {user_id}") from exc

    async def close(self) -> None:
        if self._credential is not None:
            await self._credential.close()


def _service_client(endpoint: GraphEndpoint, auth: Any, max_retries: int) -> GraphServiceClient:
    from kiota_http.middleware.options import RetryHandlerOption
    from msgraph import graph_request_adapter
    from msgraph.graph_request_adapter import GraphRequestAdapter
    from msgraph.graph_service_client import GraphServiceClient
    from msgraph_core import GraphClientFactory  # type: ignore[import-untyped]

    # The SDK's own options first: without its UrlReplaceHandlerOption, `client.me` would go out as
    # `/users/me-token-to-replace` (they are dropped as soon as one passes one's own HTTP client).
    options: dict[str, Any] = dict(graph_request_adapter.options)
    options[RetryHandlerOption.get_key()] = RetryHandlerOption(max_retries=max_retries)
    from kiota_http.kiota_client_factory import KiotaClientFactory

    from shared.cost.graph_calls import metered_transport
    from shared.observability.metrics import counting_transport

    client = KiotaClientFactory.get_default_client()
    # httpx logs every request's full URL at INFO, and the Functions host ships INFO records to Application
    # Insights: a Graph URL names the user and, in a delta round, carries the delta token (docs/privacy.md).
    # Our own metrics count the requests instead; httpx's warnings still pass.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Under the retries: the metric and the cost meter's per-driver count (docs/cost.md) see every attempt.
    client._transport = metered_transport(counting_transport(client._transport, "carlink.graph.requests"))
    http = GraphClientFactory.create_with_default_middleware(client=client, options=options)
    adapter = GraphRequestAdapter(auth, client=http)
    adapter.base_url = endpoint.base_url
    return GraphServiceClient(request_adapter=adapter)


def _no_sdk_retry() -> Any:
    """The per-request option that turns the SDK's retry handler off (see the module docstring)."""
    from kiota_http.middleware.options import RetryHandlerOption

    return RetryHandlerOption(max_retries=0, should_retry=False)


def _retry_after(exc: Any) -> float | None:
    """The seconds of a numeric `Retry-After` header of an SDK error, None if there is none."""
    raw = _header(getattr(exc, "response_headers", None), "retry-after")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None


def _utc(value: Any) -> str | None:
    """Graph's dateTimeTimeZone ("2026-11-21T08:00:00.0000000", "UTC") → canonical UTC."""
    if value is None or not value.date_time:
        return None
    text: str = value.date_time
    head, dot, fraction = text.partition(".")
    moment = dt.datetime.fromisoformat(head + (dot + fraction[:6] if dot else ""))
    if moment.tzinfo is None:
        try:
            zone: dt.tzinfo = ZoneInfo(value.time_zone or "UTC")
        except (KeyError, ValueError):  # a Windows zone name; we ask for UTC, so this is a fallback only
            zone = dt.UTC
        moment = moment.replace(tzinfo=zone)
    return canonical_time(moment)


def _event(item: Any) -> GraphEvent:
    location, coordinates = item.location, item.location.coordinates if item.location else None
    online = item.online_meeting
    return GraphEvent(
        id=item.id,
        subject=item.subject,
        start=_utc(item.start),
        end=_utc(item.end),
        is_all_day=bool(item.is_all_day),
        is_cancelled=bool(item.is_cancelled),
        location=(location.display_name or None) if location else None,
        latitude=coordinates.latitude if coordinates else None,
        longitude=coordinates.longitude if coordinates else None,
        is_online_meeting=bool(item.is_online_meeting),
        join_url=(online.join_url if online else None) or item.online_meeting_url or None,
        organizer=_organizer(item),
    )


def _organizer(item: Any) -> str | None:
    address = item.organizer.email_address if item.organizer is not None else None
    return (address.address or None) if address is not None else None


def _subscription(item: Any, resource: str, expires_at: str, subscription_id: str | None = None) -> Subscription:
    if item is None or not (item.id or subscription_id):
        raise GraphError("Graph returned no subscription")
    expiry = item.expiration_date_time
    return Subscription(
        id=str(item.id or subscription_id),
        resource=item.resource or resource,
        expires_at=canonical_time(expiry) if expiry else expires_at,
    )


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers or {}).items():
        if str(key).lower() == name:
            return str(value)
    return None


def _graph_error(exc: Exception, what: str) -> GraphError:
    """Translate an SDK or transport exception into ours; the domain decides on the subclass."""
    from kiota_abstractions.api_error import APIError

    if isinstance(exc, GraphError):  # ours already, e.g. ReauthRequiredError from the token provider
        return exc
    if not isinstance(exc, APIError):
        return GraphError(f"{what}: {type(exc).__name__}: {exc}")
    status = exc.response_status_code
    main = getattr(exc, "error", None)
    code = getattr(main, "code", None)
    detail = f"{what}: {status} {code or ''} {getattr(main, 'message', '') or ''}".strip()
    if status == 410 or code in SYNC_STATE_CODES:
        return SyncStateGoneError(detail, status, code)
    if status in (429, 503):
        raw = _header(exc.response_headers, "retry-after")
        try:
            delay = float(raw) if raw else 30.0
        except ValueError:
            delay = 30.0
        return ThrottledError(detail, status, delay)
    if status == 404:
        return GraphNotFoundError(detail, status, code)
    if status == 403:
        return GraphForbiddenError(detail, status, code)
    return GraphError(detail, status, code)
