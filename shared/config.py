"""Configuration, read once from the environment into frozen objects.

Everything the ingress and the runtime read is here. Besides this module, only these read the
environment: gunicorn's own settings (ingress/gunicorn_conf.py), the secrets check that runs before
anything starts (shared/secrets.py), the operator and dev tools (workers/ops/; the retentions of
`workers prune` in workers/ops/retention.py RetentionConfig), and the limits a
single domain owns, each in one `from_env` beside its use (notify InboxLimits, settings AccessLimits,
transcode Limits and its sandbox user, reminder ReminderConfig)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/"


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def database_url(domain: str, allow_plain: bool = True) -> str:
    """`<DOMAIN>_DATABASE_URL`, else plain `DATABASE_URL` (one worker), else `<domain>_db` locally."""
    specific = os.environ.get(f"{domain.upper()}_DATABASE_URL")
    if specific:
        return specific
    if allow_plain and os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    return f"{LOCAL_POSTGRES}{domain}_db"


@dataclass(frozen=True)
class JwtConfig:
    """Bearer tokens from the auth service: key (or the JWKS it publishes) and pinned algorithm."""

    algorithm: str = "HS256"
    secret: str | None = field(default=None, repr=False)       # HS* shared secret
    public_key: str | None = None                               # RS*/ES*/EdDSA verification key (PEM)
    private_key: str | None = field(default=None, repr=False)  # only for `workers token` in development
    issuer: str | None = None
    audience: str | None = None
    leeway_s: int = 30
    max_ttl_s: int = 86400  # longest accepted exp - iat (shared/secrets.py DEFAULT_JWT_MAX_TTL_S)
    # The auth service's published keys instead of one fixed key (ingress/jwks.py): each fetched
    # set is trusted for jwks_cache_s (and refreshed after half of it), at most one fetch per
    # jwks_refresh_min_s per process, each given up after jwks_timeout_s.
    jwks_url: str | None = None
    jwks_cache_s: float = 600.0
    jwks_refresh_min_s: float = 10.0
    jwks_timeout_s: float = 5.0

    @classmethod
    def from_env(cls) -> "JwtConfig":
        return cls(
            algorithm=os.environ.get("JWT_ALGORITHM", "HS256"),
            secret=os.environ.get("JWT_SECRET") or None,
            public_key=os.environ.get("JWT_PUBLIC_KEY") or None,
            private_key=os.environ.get("JWT_PRIVATE_KEY") or None,
            issuer=os.environ.get("JWT_ISSUER") or None,
            audience=os.environ.get("JWT_AUDIENCE") or None,
            leeway_s=_int("JWT_LEEWAY_S", 30),
            max_ttl_s=_int("JWT_MAX_TTL_S", cls.max_ttl_s),
            jwks_url=os.environ.get("JWT_JWKS_URL") or None,
            jwks_cache_s=_float("JWT_JWKS_CACHE_S", cls.jwks_cache_s),
            jwks_refresh_min_s=_float("JWT_JWKS_REFRESH_MIN_S", cls.jwks_refresh_min_s),
            jwks_timeout_s=_float("JWT_JWKS_TIMEOUT_S", cls.jwks_timeout_s),
        )

    @property
    def verify_key(self) -> str | None:
        return self.secret if self.algorithm.startswith("HS") else self.public_key

    @property
    def signing_key(self) -> str | None:
        return self.secret if self.algorithm.startswith("HS") else self.private_key


@dataclass(frozen=True)
class Config:
    """Everything a process reads from its environment."""

    rabbitmq_url: str = "amqp://127.0.0.1:5672/%2F"
    exchange: str = "app.events"
    log_level: str = "INFO"
    port: int = 8080
    # worker runtime
    prefetch: int = 400
    max_attempts: int = 6
    retry_delays_s: tuple[int, ...] = (1, 5, 30, 120)
    delivery_limit: int = 20
    heartbeat_s: int = 30
    outbox_relay_interval_s: float = 5.0
    outbox_relay_min_age_s: float = 5.0  # younger rows are still being published by their writer
    drain_timeout_s: float = 25.0        # keep below the pod's termination grace period
    health_port: int = 8081              # /livez, /readyz, /metrics (workers/runtime/health.py); 0: any free port
    liveness_stale_s: float = 60.0       # /livez fails when the consume loop has not turned for this long
    # ingress
    max_body_bytes: int = 256 * 1024
    max_batch_events: int = 100
    publish_timeout_s: float = 5.0
    body_read_timeout_s: float = 10.0    # a request body that stops arriving for this long is a 408
    max_clock_skew_s: int = 300
    reply_timeout_s: float = 5.0         # how long a request–reply event (media.upload_requested) waits: else 202 pending
    query_timeout_s: float = 5.0         # how long a read or a query event waits for its worker: else 504
    rate_limit_burst: float = 3000       # events a user may post at once (ingress/ratelimit.py)
    rate_limit_events_per_s: float = 25  # and the rate the allowance refills at
    cors_allowed_origins: tuple[str, ...] = ()  # ingress/cors.py; a malformed entry refuses the start
    jwt: JwtConfig = field(default_factory=JwtConfig)
    # ingress: HMAC key of server-made event ids (required there, shared/secrets.py); None elsewhere
    event_id_key: bytes | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls) -> "Config":
        delays = os.environ.get("RETRY_DELAYS_S")
        return cls(
            rabbitmq_url=os.environ.get("RABBITMQ_URL", cls.rabbitmq_url),
            exchange=os.environ.get("EXCHANGE", cls.exchange),
            log_level=os.environ.get("LOG_LEVEL", cls.log_level).upper(),
            port=_int("PORT", cls.port),
            prefetch=_int("PREFETCH", cls.prefetch),
            max_attempts=_int("MAX_ATTEMPTS", cls.max_attempts),
            retry_delays_s=tuple(int(d) for d in delays.split(",")) if delays else cls.retry_delays_s,
            delivery_limit=_int("DELIVERY_LIMIT", cls.delivery_limit),
            heartbeat_s=_int("HEARTBEAT_S", cls.heartbeat_s),
            outbox_relay_interval_s=_float("OUTBOX_RELAY_INTERVAL_S", cls.outbox_relay_interval_s),
            outbox_relay_min_age_s=_float("OUTBOX_RELAY_MIN_AGE_S", cls.outbox_relay_min_age_s),
            drain_timeout_s=_float("DRAIN_TIMEOUT_S", cls.drain_timeout_s),
            health_port=_int("HEALTH_PORT", cls.health_port),
            liveness_stale_s=_float("LIVENESS_STALE_S", cls.liveness_stale_s),
            max_body_bytes=_int("MAX_BODY_BYTES", cls.max_body_bytes),
            max_batch_events=_int("MAX_BATCH_EVENTS", cls.max_batch_events),
            publish_timeout_s=_float("PUBLISH_TIMEOUT_S", cls.publish_timeout_s),
            body_read_timeout_s=_float("BODY_READ_TIMEOUT_S", cls.body_read_timeout_s),
            max_clock_skew_s=_int("MAX_CLOCK_SKEW_S", cls.max_clock_skew_s),
            reply_timeout_s=_float("REPLY_TIMEOUT_S", cls.reply_timeout_s),
            query_timeout_s=_float("QUERY_TIMEOUT_S", cls.query_timeout_s),
            rate_limit_burst=_float("RATE_LIMIT_BURST", cls.rate_limit_burst),
            rate_limit_events_per_s=_float("RATE_LIMIT_EVENTS_PER_S", cls.rate_limit_events_per_s),
            cors_allowed_origins=tuple(os.environ.get("CORS_ALLOWED_ORIGINS", "").split(",")),
            jwt=JwtConfig.from_env(),
            event_id_key=os.environ.get("EVENT_ID_KEY", "").encode() or None,
        )


@dataclass(frozen=True)
class DeadLetterBounds:
    """How much each `<worker>.dead` queue keeps (shared/topology.py): beyond either bound the
    oldest dead letters are dropped, so that a flood of poison messages cannot fill the broker's disk."""

    max_bytes: int = 128 * 1024 * 1024  # message bodies; 7 workers: ~0.9 GiB at worst
    max_messages: int = 100_000

    @classmethod
    def from_env(cls) -> "DeadLetterBounds":
        bounds = cls(max_bytes=_int("DEAD_LETTER_MAX_BYTES", cls.max_bytes),
                     max_messages=_int("DEAD_LETTER_MAX_MESSAGES", cls.max_messages))
        if bounds.max_bytes < 1 or bounds.max_messages < 1:
            raise ValueError("DEAD_LETTER_MAX_BYTES and DEAD_LETTER_MAX_MESSAGES must be positive integers")
        return bounds


def _pem(value: str | None) -> str | None:
    """A PEM from the environment; `\\n` escapes allowed so it fits on one .env line."""
    return value.replace("\\n", "\n").strip() if value else None


@dataclass(frozen=True)
class FeedTokenConfig:
    algorithm: str = "EdDSA"
    private_key: str | None = None   # settings worker only
    public_key: str | None = None    # video worker
    issuer: str = "spotter-settings"
    audience: str = "spotter-feed"
    ttl_s: int = 24 * 3600
    leeway_s: int = 30

    @classmethod
    def from_env(cls) -> "FeedTokenConfig":
        return cls(
            algorithm=os.environ.get("FEED_TOKEN_ALGORITHM", cls.algorithm),
            private_key=_pem(os.environ.get("FEED_TOKEN_PRIVATE_KEY")),
            public_key=_pem(os.environ.get("FEED_TOKEN_PUBLIC_KEY")),
            issuer=os.environ.get("FEED_TOKEN_ISSUER", cls.issuer),
            audience=os.environ.get("FEED_TOKEN_AUDIENCE", cls.audience),
            ttl_s=int(os.environ.get("FEED_TOKEN_TTL_S") or cls.ttl_s),
        )


MB = 1024 * 1024
DEFAULT_S3_REGION = "us-east-1"


def spaces_region(endpoint_url: str | None) -> str | None:
    """The region of a DigitalOcean Spaces endpoint (`https://fra1.digitaloceanspaces.com` -> fra1;
    also with a bucket in front), None for any other endpoint. SigV4 signs the region into every
    request and presigned form, so it has to be the endpoint's."""
    host = urlsplit(endpoint_url or "").hostname or ""
    labels = host.split(".")
    if labels[-2:] != ["digitaloceanspaces", "com"] or len(labels) < 3 or labels[-3] == "cdn":
        return None
    return labels[-3] or None


@dataclass(frozen=True)
class StorageConfig:
    endpoint_url: str | None
    bucket: str
    access_key: str | None
    secret_key: str | None = field(repr=False)
    region: str = "us-east-1"
    max_upload_bytes: int = 500 * MB
    upload_expiry_s: int = 900
    download_expiry_s: int = 900

    @classmethod
    def from_env(cls) -> "StorageConfig":
        return cls(
            endpoint_url=os.environ.get("S3_ENDPOINT_URL") or None,
            bucket=os.environ.get("S3_BUCKET", "spotter-media"),
            access_key=os.environ.get("S3_ACCESS_KEY") or None,
            secret_key=os.environ.get("S3_SECRET_KEY") or None,
            # unset or empty: a Spaces endpoint's own region, else us-east-1
            region=(os.environ.get("S3_REGION") or spaces_region(os.environ.get("S3_ENDPOINT_URL"))
                    or DEFAULT_S3_REGION),
            max_upload_bytes=int(os.environ.get("MAX_UPLOAD_BYTES", 500 * MB)),
            upload_expiry_s=int(os.environ.get("UPLOAD_URL_EXPIRY_S", 900)),
            download_expiry_s=int(os.environ.get("DOWNLOAD_URL_EXPIRY_S", 900)),
        )


DEFAULT_CHAT_PATH = "/api/chat/completions"


class NotConfigured(RuntimeError):
    """The environment names an endpoint the client cannot use (the worker refuses to start)."""


@dataclass(frozen=True)
class OpenWebUIConfig:
    url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    chat_path: str = DEFAULT_CHAT_PATH
    timeout_s: float = 60.0

    @classmethod
    def from_env(cls) -> "OpenWebUIConfig | None":
        url = os.environ.get("OPENWEBUI_URL", "").strip()
        if not url:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NotConfigured("OPENWEBUI_URL must be an http:// or https:// URL")
        if parts.username or parts.password:
            raise NotConfigured("OPENWEBUI_URL must not carry credentials: set OPENWEBUI_API_KEY")
        model = os.environ.get("OPENWEBUI_MODEL", "").strip()
        if not model:
            raise NotConfigured("OPENWEBUI_MODEL is required when OPENWEBUI_URL is set")
        path = os.environ.get("OPENWEBUI_CHAT_PATH", "").strip() or DEFAULT_CHAT_PATH
        try:
            timeout_s = float(os.environ.get("OPENWEBUI_TIMEOUT_S", "") or 60)
        except ValueError:
            raise NotConfigured("OPENWEBUI_TIMEOUT_S must be a number of seconds") from None
        if timeout_s <= 0:
            raise NotConfigured("OPENWEBUI_TIMEOUT_S must be positive")
        return cls(url=url.rstrip("/"), model=model, api_key=os.environ.get("OPENWEBUI_API_KEY") or None,
                   chat_path="/" + path.lstrip("/"), timeout_s=timeout_s)
