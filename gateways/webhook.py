"""A generic HTTP gateway: any provider API, configured by a request template, no code.

The account's ``options`` describe the request to make and how to read the reply. Template
values may hold placeholders, filled in per message:

==============  ===============================================================
placeholder     value
==============  ===============================================================
``{to}``        the recipient in E.164 (``+447700900123``)
``{to_digits}`` the recipient without ``+`` (``447700900123``)
``{text}``      the text of the piece (it may hold an access code)
``{sender}``    the message's sender, else the account's (empty when neither)
``{encoding}``  ``GSM-7`` or ``UCS-2``
``{segments}``  how many carrier SMS the piece needs
``{client_ref}``  our reference for the piece (empty when there is none)
``{account_id}``, ``{user_id}``, ``{password}``  the account's fields
==============  ===============================================================

``{password}`` may appear only in ``headers``, ``body`` and ``query`` values (prefer a
header or the body: query strings end up in access logs). An unknown placeholder, a
malformed template, or a credential placeholder whose account field is empty fails when the
account is created, naming the placeholder. Literal braces are written ``{{`` and ``}}``.

Example: a JSON API with bearer authentication, replying ``{"data": {"id": "..."}}``::

    gateway: webhook
    url: https://api.example.com
    password: <API token>
    options:
      path: /v1/messages
      headers: {Authorization: "Bearer {password}"}
      body: {to: "{to}", text: "{text}", from: "{sender}"}
      message_id_field: data.id
      error_code_field: error.code
      recipient_codes: [invalid_number]
      account_codes: [unauthorized, no_credit]
"""

from __future__ import annotations

import math
import string
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final, Literal, cast
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from gateways.base import Capabilities, GatewayMetadata, SmsGateway
from gateways.errors import (
    AccountRejected,
    ConfigurationError,
    GatewayError,
    OutcomeUnknown,
    PermanentGatewayError,
    RateLimited,
    RecipientRejected,
    TransientGatewayError,
    error_from_rule,
)
from gateways.http import HttpReply, error_for_status, parse_retry_after
from gateways.models import CheckResult, GatewayAccount, OutboundSms, SendReceipt
from gateways.redaction import provider_text

__all__ = ["PLACEHOLDERS", "WebhookGateway", "WebhookOptions"]

_NAME: Final = "webhook"

PLACEHOLDERS: Final[tuple[str, ...]] = (
    "to",
    "to_digits",
    "text",
    "sender",
    "encoding",
    "segments",
    "client_ref",
    "account_id",
    "user_id",
    "password",
)
"""Every placeholder a template may use."""

# Placeholders known without a message: what the credential check can render.
_ACCOUNT_PLACEHOLDERS: Final = frozenset({"account_id", "user_id", "password", "sender"})
_RECIPIENT_PLACEHOLDERS: Final = frozenset({"to", "to_digits"})
_DEFAULT_BODY: Final[dict[str, str]] = {"to": "{to}", "text": "{text}"}
_DETAIL_LIMIT: Final = 200  # characters of provider error text kept in a message
# Shorter values are not scrubbed out of provider text: a two-letter message ("ok") would
# turn every word holding it into asterisks, and is no secret.
_MIN_SCRUBBED: Final = 3
_FORMATTER: Final = string.Formatter()


def _template_error(detail: str) -> PydanticCustomError:
    # The detail travels as context so braces in it are not read as pydantic's own fields.
    return PydanticCustomError("template", "{detail}", {"detail": detail})


def placeholders_of(template: str) -> set[str]:
    """The placeholder names a template uses.

    Raises:
        ValueError: The template is malformed, uses an unknown placeholder, a positional
            one, attribute/index access, a conversion or a format spec.
    """
    names: set[str] = set()
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as error:
        hint = "write literal braces as {{ and }}"
        raise ValueError(f"malformed template ({error}); {hint}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name:
            raise ValueError("a placeholder needs a name, such as {to}")
        if name not in PLACEHOLDERS:
            known = ", ".join(f"{{{known}}}" for known in PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{name}}}; known: {known}")
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no conversion or format spec")
        names.add(name)
    return names


def _check_templates(templates: Mapping[str, str], *, allow_password: bool = True) -> None:
    """Check templates, each keyed by a prefix saying where it is (``value of 'to': ``)."""
    for where, template in templates.items():
        try:
            used = placeholders_of(template)
        except ValueError as error:
            raise _template_error(f"{where}{error}") from None
        if "password" in used and not allow_password:
            raise _template_error(
                f"{where}{{password}} may only appear in headers, body or query values"
            )


def _check_dotted(value: str | None) -> str | None:
    if value is not None and (not value.strip() or any(not part for part in value.split("."))):
        raise _template_error(f"{value!r} is not a dotted path such as 'data.id'")
    return value


class WebhookOptions(BaseModel):
    """The request template and reply reading of a webhook account (``account.options``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["POST", "GET"] = "POST"
    """HTTP method of the send request; a GET carries no body (use ``query``)."""
    path: str = ""
    """Appended to the account's ``url``; may use placeholders (not ``{password}``)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Request headers; values may use placeholders (``Bearer {password}``)."""
    body_format: Literal["json", "form", "none"] = "json"
    """How ``body`` is encoded: a JSON object, a urlencoded form, or no body at all."""
    body: dict[str, str] | None = None
    """Body fields; values may use placeholders. Default ``{"to": "{to}", "text": "{text}"}``
    when the request has a body."""
    query: dict[str, str] = Field(default_factory=dict)
    """Query parameters; values may use placeholders."""
    success_status: list[int] = Field(default_factory=lambda: [200, 201, 202, 204], min_length=1)
    """HTTP statuses that mean the provider accepted the message."""
    message_id_field: str | None = None
    """Dotted path to the provider's message id in a JSON reply (``data.id``,
    ``messages.0.id``). Without it (or when the reply lacks it) the id is synthetic:
    ``webhook:<client_ref>``, or ``webhook:<random uuid>`` when there is no client_ref."""
    success_field: str | None = None
    """Dotted path to a field that must equal ``success_value`` in a success reply (or be
    truthy when ``success_value`` is unset), for APIs that answer errors with HTTP 200."""
    success_value: str | None = None
    error_field: str | None = None
    """Dotted path to the provider's error text in a JSON reply."""
    error_code_field: str | None = None
    """Dotted path to the provider's error code in a JSON reply."""
    permanent_codes: list[str] = Field(default_factory=list)
    """Codes after which retrying cannot help."""
    recipient_codes: list[str] = Field(default_factory=list)
    """Codes that refuse this recipient (invalid, barred, opted out)."""
    account_codes: list[str] = Field(default_factory=list)
    """Codes that refuse the whole account (bad credentials, no balance, suspended)."""
    retry_codes: list[str] = Field(default_factory=list)
    """Codes after which the same send may succeed later (throttles, provider trouble)."""
    retry_after_field: str | None = None
    """Dotted path to the seconds to wait before retrying, in a JSON reply."""
    credentials_path: str | None = None
    """Path of a side-effect-free endpoint (balance, account) that ``test_credentials``
    GETs with the account's headers and query; a 2xx reply proves the credentials."""

    @field_validator("path", "credentials_path")
    @classmethod
    def _path_template(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value:
            return value
        if not value.startswith("/") or "?" in value or "#" in value:
            raise _template_error(
                f"{value!r} must start with '/' and hold no '?' or '#' (use options.query)"
            )
        _check_templates({"": value}, allow_password=False)
        return value

    @field_validator("headers", "query")
    @classmethod
    def _value_templates(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        _check_templates({f"value of {key!r}: ": text for key, text in value.items()})
        return value

    @field_validator("body")
    @classmethod
    def _body_templates(
        cls, value: dict[str, str] | None, info: ValidationInfo
    ) -> dict[str, str] | None:
        if value is None:
            return value
        if info.data.get("method") == "GET" or info.data.get("body_format") == "none":
            raise _template_error(
                "a GET request or body_format 'none' sends no body; put the fields in options.query"
            )
        _check_templates({f"value of {key!r}: ": text for key, text in value.items()})
        return value

    @field_validator("success_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        wrong = [status for status in value if not 100 <= status <= 599]
        if wrong:
            raise _template_error(f"{wrong} are not HTTP statuses")
        return value

    @field_validator(
        "message_id_field", "success_field", "error_field", "error_code_field", "retry_after_field"
    )
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        return _check_dotted(value)

    @property
    def sends_body(self) -> bool:
        """Whether the send request carries a body."""
        return self.method != "GET" and self.body_format != "none"

    def effective_body(self) -> dict[str, str]:
        """The body template actually sent (the default when the request has a body)."""
        if not self.sends_body:
            return {}
        return _DEFAULT_BODY if self.body is None else self.body

    def templates(self) -> dict[str, str]:
        """Every template of the send request, by where it is (``headers['X-Key']``)."""
        found = {"path": self.path}
        for where, values in (
            ("headers", self.headers),
            ("body", self.effective_body()),
            ("query", self.query),
        ):
            found.update({f"{where}[{key!r}]": value for key, value in values.items()})
        return found

    def code_lists(self) -> Iterable[tuple[str, list[str]]]:
        """The code lists by option name."""
        yield "permanent_codes", self.permanent_codes
        yield "recipient_codes", self.recipient_codes
        yield "account_codes", self.account_codes
        yield "retry_codes", self.retry_codes


class _StrictValues(dict[str, str]):
    """Placeholder values for ``str.format_map``; an unknown name is a configuration error."""

    def __missing__(self, key: str) -> str:
        raise ConfigurationError(f"{_NAME}: unknown placeholder {{{key}}} in a template")


def _render(template: str, values: _StrictValues) -> str:
    return template.format_map(values)


def _field_at(data: Any, path: str | None) -> Any:
    """The value at a dotted path (``messages.0.id``) of parsed JSON, or None."""
    if path is None:
        return None
    node = data
    for part in path.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _text_at(data: Any, path: str | None) -> str | None:
    value = _field_at(data, path)
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"  # as the JSON spelled it
    return str(value)


class WebhookGateway(SmsGateway):
    """Any HTTP SMS API, reached through a request template in ``account.options``.

    ::

        account field   webhook meaning
        -------------   ---------------
        url             base URL of the API (required; options.path is appended)
        account_id      the {account_id} placeholder
        user_id         the {user_id} placeholder
        password        the {password} placeholder (a secret: headers, body, query only)
        sender          the {sender} placeholder when the message sets none

    Replies: a status in ``success_status`` (and, when configured, ``success_field`` equal
    to ``success_value``) is a success; the message id is read from ``message_id_field``
    (a success reply without it is :class:`~gateways.errors.OutcomeUnknown`: the message
    may have gone out); without ``message_id_field``, a synthetic
    ``webhook:<client_ref or uuid4>`` is returned. Any other reply is
    classified by the provider's code (``error_code_field``) against ``recipient_codes``
    (:class:`RecipientRejected`), ``account_codes`` (:class:`AccountRejected`),
    ``permanent_codes`` and ``retry_codes`` (:class:`RateLimited` when a retry delay is
    known from ``retry_after_field`` or ``Retry-After``); a code in no list, or no code, is
    classified by the HTTP status (:func:`gateways.http.error_for_status`). An unlisted
    code in an HTTP-success reply whose ``success_field`` says failure is permanent.
    """

    metadata: ClassVar[GatewayMetadata] = GatewayMetadata(
        name=_NAME,
        description="Any HTTP SMS API, configured by a request template (no code needed)",
        url=None,
        url_required=True,
        field_names={
            "url": "API base URL",
            "account_id": "{account_id} placeholder",
            "user_id": "{user_id} placeholder",
            "password": "{password} placeholder",
            "sender": "{sender} placeholder",
        },
        capabilities=Capabilities(unicode=True, concatenates=True, default_rate_per_s=10.0),
    )
    Options: ClassVar[type[BaseModel]] = WebhookOptions

    @property
    def settings(self) -> WebhookOptions:
        """The account's options, parsed."""
        return cast(WebhookOptions, self.options)

    @classmethod
    def check_account(cls, account: GatewayAccount) -> None:
        """Check the required fields and the templates against the account.

        Raises:
            ConfigurationError: As the base class, or a template never names the recipient
                or the text, uses a credential placeholder whose field is empty, or a code
                is in two lists.
        """
        super().check_account(account)
        options = cast(WebhookOptions, cls._parse_options(account))
        problems: list[str] = []
        used: set[str] = set()
        for template in options.templates().values():
            used |= placeholders_of(template)
        if not used & _RECIPIENT_PLACEHOLDERS:
            problems.append("the request never uses {to} or {to_digits}")
        if "text" not in used:
            problems.append("the request never uses {text}")
        for name in ("account_id", "user_id", "password"):
            if name in used and not _has_value(account, name):
                problems.append(f"the request uses {{{name}}} but the account's {name} is empty")
        if options.success_value is not None and options.success_field is None:
            problems.append("success_value is set without success_field")
        seen: dict[str, str] = {}
        for list_name, codes in options.code_lists():
            for code in codes:
                if code in seen and seen[code] != list_name:
                    problems.append(f"code {code!r} is in both {seen[code]} and {list_name}")
                seen.setdefault(code, list_name)
        if problems:
            raise ConfigurationError(
                f"{_NAME} account {account.name!r}: options: " + "; ".join(problems)
            )

    def _values(self, sms: OutboundSms | None) -> _StrictValues:
        account = self.account
        values = _StrictValues(
            account_id=account.account_id or "",
            user_id=account.user_id or "",
            password=account.secret("password") or "",
            sender=account.sender or "",
        )
        if sms is not None:
            values.update(
                to=sms.to,
                to_digits=sms.to_digits,
                text=sms.text,
                sender=sms.sender or account.sender or "",
                encoding=sms.encoding,
                segments=str(sms.segments),
                client_ref=sms.client_ref or "",
            )
        return values

    def _url(self, path_template: str, values: _StrictValues) -> str:
        quoted = _StrictValues({key: quote(value, safe="") for key, value in values.items()})
        return self.base_url + _render(path_template, quoted)

    async def send(self, sms: OutboundSms) -> SendReceipt:
        """Render the template for ``sms``, make the request and read the reply.

        Raises:
            TransientGatewayError: Network trouble, 5xx, or a ``retry_codes`` code
                (``RateLimited`` when a retry delay is known).
            OutcomeUnknown: No usable answer (timeout, dropped connection, a success reply
                without the id ``message_id_field`` names).
            PermanentGatewayError: Any other refusal (``RecipientRejected``,
                ``AccountRejected`` per the code lists and HTTP status).
        """
        options = self.settings
        values = self._values(sms)
        # Rendered headers/body hold the secret: they live only in this frame.
        body = {key: _render(value, values) for key, value in options.effective_body().items()}
        reply = await self.http.request(
            options.method,
            self._url(options.path, values),
            params={key: _render(value, values) for key, value in options.query.items()} or None,
            headers={key: _render(value, values) for key, value in options.headers.items()},
            data=body if options.body_format == "form" and options.sends_body else None,
            json_body=body if options.body_format == "json" and options.sends_body else None,
        )
        if reply.status not in options.success_status:
            raise self._failure(reply, sms)
        data = reply.json()
        status = _text_at(data, options.success_field)
        if options.success_field is not None and not _success_value_matches(
            status, _field_at(data, options.success_field), options.success_value
        ):
            raise self._failure(reply, sms, success_status=True)
        if options.message_id_field is None:
            return SendReceipt(
                provider_message_ids=(f"{_NAME}:{sms.client_ref or uuid.uuid4()}",), status=status
            )
        message_id = _text_at(data, options.message_id_field)
        if not message_id:
            raise OutcomeUnknown(
                f"{_NAME}: provider answered HTTP {reply.status} without "
                f"{options.message_id_field}; the message may have been accepted",
                gateway=_NAME,
                http_status=reply.status,
            )
        return SendReceipt(provider_message_ids=(message_id,), status=status)

    def _scrub(self, text: str | None, sms: OutboundSms) -> str | None:
        """Provider text fit for an error message: no secret, no message text, masked numbers."""
        if not text:
            return None
        secrets = (self.account.secret("password") or "", sms.text)
        kept = provider_text(
            text, secrets=[s for s in secrets if len(s) >= _MIN_SCRUBBED], limit=_DETAIL_LIMIT
        )
        return kept or None

    def _failure(
        self, reply: HttpReply, sms: OutboundSms, *, success_status: bool = False
    ) -> GatewayError:
        """The error for a refused send, per the code lists, else per the HTTP status."""
        options = self.settings
        data = reply.json()
        code = _text_at(data, options.error_code_field)
        detail = self._scrub(_text_at(data, options.error_field), sms)
        said = f"{_NAME}: provider answered HTTP {reply.status}"
        if code is not None:
            said += f", code {self._scrub(code, sms)!r}"
        if success_status:
            got = self._scrub(_text_at(data, options.success_field), sms)
            said += f", {options.success_field}={got!r}"
        if detail:
            said += f" ({detail})"
        kind = self._classify_code(code)
        delay = self._delay(reply, data)
        if kind is None and success_status:
            unknown = f"unknown code {self._scrub(code, sms)!r}" if code else "no error code"
            said = f"{said}: {unknown}"
            kind = PermanentGatewayError
        elif kind is None:
            generic = error_for_status(reply, _NAME)
            kind = type(generic)
            if isinstance(generic, RateLimited) and delay is None:
                delay = generic.retry_after_s
        elif kind is TransientGatewayError and delay is not None:
            kind = RateLimited  # a retry code with a known delay is a throttle
        return error_from_rule(
            kind,
            said,
            gateway=_NAME,
            http_status=reply.status,
            provider_code=code,
            retry_after_s=1.0 if delay is None else delay,
        )

    def _classify_code(self, code: str | None) -> type[GatewayError] | None:
        if code is None:
            return None
        options = self.settings
        if code in options.recipient_codes:
            return RecipientRejected
        if code in options.account_codes:
            return AccountRejected
        if code in options.permanent_codes:
            return PermanentGatewayError
        if code in options.retry_codes:
            return TransientGatewayError
        return None

    def _delay(self, reply: HttpReply, data: Any) -> float | None:
        """The provider's retry delay: the reply field, else ``Retry-After``, else None."""
        value = _text_at(data, self.settings.retry_after_field)
        if value is not None:
            try:
                seconds = float(value)
            except ValueError:
                seconds = math.nan
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
        header = reply.headers.get("Retry-After")
        return parse_retry_after(header) if header else None

    async def test_credentials(self) -> CheckResult:
        """GET ``options.credentials_path`` with the account's headers and query.

        Only headers and query parameters whose templates need no message (account
        placeholders only) are sent. A 2xx reply proves the API accepted them; it cannot
        prove the account may send (balance, sender, routes).
        """
        options = self.settings
        if not options.credentials_path:
            return CheckResult(
                False,
                "the webhook gateway has no credential check configured "
                "(set options.credentials_path)",
                skipped=True,
            )
        values = self._values(None)

        def account_only(templates: dict[str, str]) -> dict[str, str]:
            return {
                key: _render(value, values)
                for key, value in templates.items()
                if placeholders_of(value) <= _ACCOUNT_PLACEHOLDERS
            }

        where = f"credentials endpoint {options.credentials_path}"
        try:
            reply = await self.http.request(
                "GET",
                self._url(options.credentials_path, values),
                params=account_only(options.query) or None,
                headers=account_only(options.headers),
            )
        except GatewayError as error:
            return CheckResult(False, error.reason)
        if 200 <= reply.status < 300:
            return CheckResult(
                True,
                f"{where} answered HTTP {reply.status}: the credentials were accepted "
                "(this does not prove the account may send)",
            )
        if reply.status in (401, 403):
            return CheckResult(
                False, f"{where} answered HTTP {reply.status}: the credentials were refused"
            )
        return CheckResult(False, f"{where} answered HTTP {reply.status}")


def _has_value(account: GatewayAccount, name: str) -> bool:
    if name == "password":
        return bool((account.secret("password") or "").strip())
    return bool((getattr(account, name) or "").strip())


def _success_value_matches(text: str | None, raw: Any, expected: str | None) -> bool:
    if expected is None:
        return bool(raw)
    return text == expected
