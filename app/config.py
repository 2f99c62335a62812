"""Configuration read from the environment, in one place.

Every setting the platform understands is an attribute of :class:`Config`; README lists them.
"""

from __future__ import annotations

import os
from pathlib import Path

import storage

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SECRET_KEY = "dev-only-secret-change-me"  # noqa: S105 - refused in production, see validate()


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


class ConfigError(RuntimeError):
    """The configuration cannot run safely."""


class Config:
    """Settings for one deployment; build with :meth:`from_env`."""

    ENV: str = "development"
    TESTING: bool = False
    SECRET_KEY: str = DEFAULT_SECRET_KEY
    INSTANCE_PATH: Path = ROOT / "instance"
    DATABASE_URL: str = ""
    SQL_ECHO: bool = False

    # Sessions and sign-in
    SESSION_COOKIE_NAME: str = "hospital_session"
    SESSION_COOKIE_HTTPONLY: bool = True
    SESSION_COOKIE_SAMESITE: str = "Lax"
    SESSION_COOKIE_SECURE: bool = False
    STAFF_IDLE_MINUTES: int = 15
    PATIENT_IDLE_MINUTES: int = 30
    LOCKOUT_THRESHOLD: int = 5
    LOCKOUT_MINUTES: int = 15
    IP_LOCKOUT_THRESHOLD: int = 20
    PASSWORD_MIN_LENGTH: int = 10
    # argon2id cost: defaults follow RFC 9106's second recommendation; tests lower them.
    ARGON2_TIME_COST: int = 3
    ARGON2_MEMORY_COST: int = 65536
    WTF_CSRF_TIME_LIMIT: int | None = None
    MAX_FORM_FIELD_LENGTH: int = 2000

    # Object storage: "fs" (embedded) or "s3" (MinIO in production)
    OBJECT_STORE: str = "fs"
    STORAGE_PATH: Path = ROOT / "instance" / "objects"
    S3_ENDPOINT: str = "127.0.0.1:9000"
    S3_ACCESS_KEY: str = ""
    S3_SECRET_KEY: str = ""
    S3_BUCKET: str = "hospital"
    S3_REGION: str = "us-east-1"
    S3_SECURE: bool = True

    # Imaging: uploads, DICOM listener (C-STORE SCP), DICOMweb
    IMAGING_MAX_UPLOAD_BYTES: int = 4 * 1024**3
    IMAGING_MAX_FILE_BYTES: int = 1024**3
    IMAGING_MAX_ZIP_ENTRIES: int = 50_000
    DICOM_AE_TITLE: str = "TOWNHEALTH"
    DICOM_HOST: str = "127.0.0.1"
    DICOM_PORT: int = 11112
    DICOM_ALLOWED_AETS: str = ""
    DICOMWEB_CORS_ORIGINS: str = ""
    # Reverse proxies in front of the app whose X-Forwarded-For/-Proto/-Host/-Port/-Prefix are trusted (0: none).
    # Links the app hands out (DICOMweb RetrieveURL, BulkDataURI) then name the proxy's host and scheme.
    TRUSTED_PROXIES: int = 0

    # Media service and shared state
    MEDIA_URL: str = "http://127.0.0.1:8765"
    MEDIA_SECRET: str = ""
    # Relay-mode media workers (comma-separated base URLs); empty means MEDIA_URL only.
    MEDIA_WORKERS: str = ""
    # Master key for encrypted consult recordings (hex of 32+ bytes); empty derives one from SECRET_KEY.
    RECORDING_KEY: str = ""
    REDIS_URL: str = ""
    # Where request rate limits are counted: Redis shares them across workers and servers; empty means
    # REDIS_URL, else this process's memory (the embedded single-process setup).
    RATELIMIT_STORAGE_URI: str = ""
    RATELIMIT_HEADERS_ENABLED: bool = True  # X-RateLimit-* on limited routes, Retry-After on a 429
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED: bool = True  # Redis down: count per process rather than refuse all
    RATELIMIT_KEY_PREFIX: str = "hospital"
    # Audit trail: where the worker forwards sealed events (udp://host:514 or tcp://host:601), empty: nowhere.
    AUDIT_SYSLOG_URL: str = ""
    # WebRTC: comma-separated ICE server URLs; TURN credentials follow coturn's TURN REST API scheme.
    STUN_URLS: str = ""
    TURN_URLS: str = ""
    TURN_SECRET: str = ""
    TURN_TTL_SECONDS: int = 3600
    CONSULT_JOIN_TOKEN_SECONDS: int = 120
    CONSULT_CHECKIN_MINUTES: int = 15
    # Reminders before each consult (minutes before it, comma-separated), and until when a patient may move or
    # cancel it online (minutes before it).
    CONSULT_REMINDER_MINUTES: str = "1440,60"
    CONSULT_CHANGE_CUTOFF_MINUTES: int = 120
    # The address people reach the platform at, for links in reminders (email, SMS).
    PUBLIC_URL: str = "http://127.0.0.1:5000"
    # A consult page that has not connected peer to peer within this many seconds moves the consult to the relay.
    CONSULT_P2P_TIMEOUT_SECONDS: int = 5
    SIGNAL_RATE_LIMIT: int = 60
    """Signaling messages one user may send to one consult per 10 seconds."""

    # Multi-factor sign-in and OAuth2 / OpenID Connect (docs/oauth.md)
    MFA_REQUIRED_ROLES: tuple[str, ...] = ("doctor", "pharmacist", "admin")
    MFA_MAX_ATTEMPTS: int = 5
    OAUTH_ISSUER: str = ""  # empty: the request's own base URL
    OAUTH_JWKS_PATH: Path | None = None  # private signing keys (JWK set); default instance/oauth-jwks.json
    OAUTH_SIGNING_ALG: str = "RS256"
    OAUTH_ACCESS_TOKEN_SECONDS: int = 3600
    OAUTH_REFRESH_TOKEN_DAYS: int = 30
    OAUTH_ID_TOKEN_SECONDS: int = 3600
    OAUTH_CODE_SECONDS: int = 120
    OAUTH_JWKS_MAX_AGE: int = 300  # how long clients may cache the key set; a next key is published this far ahead
    OAUTH_DYNAMIC_REGISTRATION: bool = False  # RFC 7591 self-registration of public SMART apps
    FHIR_BASE_URL: str = ""  # empty: <issuer>/fhir; the ``aud`` SMART apps must send
    # Prescriptions and pharmacy
    RX_SIGNING_KEY_FILE: Path | None = None
    PICKUP_DEADLINE_DAYS: int = 10
    # Reading: unacknowledged critical results are escalated after this; held reports are released after this.
    READING_CRITICAL_ESCALATE_MINUTES: int = 30
    READING_RELEASE_MAX_DAYS: int = 7

    # Notifications: "log" (default) or "smtp"
    NOTIFY_SENDER: str = "log"
    SMTP_HOST: str = "localhost"
    SMTP_PORT: int = 25
    SMTP_USER: str = ""
    SMTP_PASSWORD: str = ""
    SMTP_FROM: str = "Town Health <no-reply@localhost>"
    SMTP_STARTTLS: bool = False
    # Text messages: "log" (default; ids only) or "http" (an SMS gateway: JSON POST to the URL with the key)
    SMS_SENDER: str = "log"
    SMS_GATEWAY_URL: str = ""
    SMS_GATEWAY_KEY: str = ""

    # API docs (flask-smorest)
    API_TITLE: str = "Internet hospital API"
    API_VERSION: str = "v1"
    OPENAPI_VERSION: str = "3.0.3"
    OPENAPI_URL_PREFIX: str = "/api/v1"
    OPENAPI_JSON_PATH: str = "openapi.json"
    OPENAPI_SWAGGER_UI_PATH: str | None = None

    @classmethod
    def from_env(cls) -> Config:
        """Read every setting from the environment, with embedded defaults."""
        cfg = cls()
        cfg.ENV = _env("HOSPITAL_ENV", cls.ENV)
        cfg.SECRET_KEY = _env("SECRET_KEY", cls.SECRET_KEY)
        cfg.INSTANCE_PATH = Path(_env("HOSPITAL_INSTANCE_PATH", str(cls.INSTANCE_PATH)))
        cfg.DATABASE_URL = _env("DATABASE_URL", f"sqlite:///{cfg.INSTANCE_PATH / 'hospital.db'}")
        cfg.SQL_ECHO = _env_bool("HOSPITAL_SQL_ECHO", False)
        cfg.SESSION_COOKIE_SECURE = _env_bool("HOSPITAL_SECURE_COOKIES", cfg.ENV == "production")
        cfg.STAFF_IDLE_MINUTES = _env_int("HOSPITAL_STAFF_IDLE_MINUTES", cls.STAFF_IDLE_MINUTES)
        cfg.PATIENT_IDLE_MINUTES = _env_int("HOSPITAL_PATIENT_IDLE_MINUTES", cls.PATIENT_IDLE_MINUTES)
        cfg.LOCKOUT_THRESHOLD = _env_int("HOSPITAL_LOCKOUT_THRESHOLD", cls.LOCKOUT_THRESHOLD)
        cfg.LOCKOUT_MINUTES = _env_int("HOSPITAL_LOCKOUT_MINUTES", cls.LOCKOUT_MINUTES)
        cfg.IP_LOCKOUT_THRESHOLD = _env_int("HOSPITAL_IP_LOCKOUT_THRESHOLD", cls.IP_LOCKOUT_THRESHOLD)
        for name, value in storage.settings_from_env(cfg.INSTANCE_PATH).items():
            setattr(cfg, name, value)
        cfg.IMAGING_MAX_UPLOAD_BYTES = _env_int("IMAGING_MAX_UPLOAD_BYTES", cls.IMAGING_MAX_UPLOAD_BYTES)
        cfg.IMAGING_MAX_FILE_BYTES = _env_int("IMAGING_MAX_FILE_BYTES", cls.IMAGING_MAX_FILE_BYTES)
        cfg.IMAGING_MAX_ZIP_ENTRIES = _env_int("IMAGING_MAX_ZIP_ENTRIES", cls.IMAGING_MAX_ZIP_ENTRIES)
        cfg.DICOM_AE_TITLE = _env("DICOM_AE_TITLE", cls.DICOM_AE_TITLE)
        cfg.DICOM_HOST = _env("DICOM_HOST", cls.DICOM_HOST)
        cfg.DICOM_PORT = _env_int("DICOM_PORT", cls.DICOM_PORT)
        cfg.DICOM_ALLOWED_AETS = _env("DICOM_ALLOWED_AETS", cls.DICOM_ALLOWED_AETS)
        cfg.DICOMWEB_CORS_ORIGINS = _env("DICOMWEB_CORS_ORIGINS", cls.DICOMWEB_CORS_ORIGINS)
        cfg.TRUSTED_PROXIES = _env_int("HOSPITAL_TRUSTED_PROXIES", cls.TRUSTED_PROXIES)
        cfg.MEDIA_URL = _env("HOSPITAL_MEDIA_URL", cls.MEDIA_URL)
        cfg.MEDIA_SECRET = _env("HOSPITAL_MEDIA_SECRET", cfg.SECRET_KEY)
        cfg.MEDIA_WORKERS = _env("HOSPITAL_MEDIA_WORKERS", cls.MEDIA_WORKERS)
        cfg.RECORDING_KEY = _env("HOSPITAL_RECORDING_KEY", cls.RECORDING_KEY)
        cfg.REDIS_URL = _env("REDIS_URL", cls.REDIS_URL)
        cfg.RATELIMIT_STORAGE_URI = _env("HOSPITAL_RATELIMIT_STORAGE_URI", cls.RATELIMIT_STORAGE_URI)
        cfg.AUDIT_SYSLOG_URL = _env("HOSPITAL_AUDIT_SYSLOG_URL", cls.AUDIT_SYSLOG_URL)
        roles = os.environ.get("HOSPITAL_MFA_REQUIRED_ROLES")
        if roles is not None:
            cfg.MFA_REQUIRED_ROLES = tuple(r.strip() for r in roles.split(",") if r.strip())
        cfg.MFA_MAX_ATTEMPTS = _env_int("HOSPITAL_MFA_MAX_ATTEMPTS", cls.MFA_MAX_ATTEMPTS)
        cfg.OAUTH_ISSUER = _env("OAUTH_ISSUER", cls.OAUTH_ISSUER).rstrip("/")
        jwks = os.environ.get("OAUTH_JWKS_PATH")
        cfg.OAUTH_JWKS_PATH = Path(jwks) if jwks else None
        cfg.OAUTH_SIGNING_ALG = _env("OAUTH_SIGNING_ALG", cls.OAUTH_SIGNING_ALG)
        cfg.OAUTH_ACCESS_TOKEN_SECONDS = _env_int("OAUTH_ACCESS_TOKEN_SECONDS", cls.OAUTH_ACCESS_TOKEN_SECONDS)
        cfg.OAUTH_REFRESH_TOKEN_DAYS = _env_int("OAUTH_REFRESH_TOKEN_DAYS", cls.OAUTH_REFRESH_TOKEN_DAYS)
        cfg.OAUTH_ID_TOKEN_SECONDS = _env_int("OAUTH_ID_TOKEN_SECONDS", cls.OAUTH_ID_TOKEN_SECONDS)
        cfg.OAUTH_JWKS_MAX_AGE = _env_int("OAUTH_JWKS_MAX_AGE", cls.OAUTH_JWKS_MAX_AGE)
        cfg.OAUTH_DYNAMIC_REGISTRATION = _env_bool("OAUTH_DYNAMIC_REGISTRATION", cls.OAUTH_DYNAMIC_REGISTRATION)
        cfg.FHIR_BASE_URL = _env("FHIR_BASE_URL", cls.FHIR_BASE_URL).rstrip("/")
        key_file = os.environ.get("HOSPITAL_RX_SIGNING_KEY_FILE")
        cfg.RX_SIGNING_KEY_FILE = Path(key_file) if key_file else None
        cfg.PICKUP_DEADLINE_DAYS = _env_int("HOSPITAL_PICKUP_DEADLINE_DAYS", cls.PICKUP_DEADLINE_DAYS)
        cfg.READING_CRITICAL_ESCALATE_MINUTES = _env_int("HOSPITAL_READING_CRITICAL_ESCALATE_MINUTES",
                                                         cls.READING_CRITICAL_ESCALATE_MINUTES)
        cfg.READING_RELEASE_MAX_DAYS = _env_int("HOSPITAL_READING_RELEASE_MAX_DAYS", cls.READING_RELEASE_MAX_DAYS)
        cfg.NOTIFY_SENDER = _env("HOSPITAL_NOTIFY_SENDER", cls.NOTIFY_SENDER)
        cfg.SMTP_HOST = _env("SMTP_HOST", cls.SMTP_HOST)
        cfg.SMTP_PORT = _env_int("SMTP_PORT", cls.SMTP_PORT)
        cfg.SMTP_USER = _env("SMTP_USER", cls.SMTP_USER)
        cfg.SMTP_PASSWORD = _env("SMTP_PASSWORD", cls.SMTP_PASSWORD)
        cfg.SMTP_FROM = _env("SMTP_FROM", cls.SMTP_FROM)
        cfg.SMTP_STARTTLS = _env_bool("SMTP_STARTTLS", cls.SMTP_STARTTLS)
        cfg.SMS_SENDER = _env("HOSPITAL_SMS_SENDER", cls.SMS_SENDER)
        cfg.SMS_GATEWAY_URL = _env("HOSPITAL_SMS_GATEWAY_URL", cls.SMS_GATEWAY_URL)
        cfg.SMS_GATEWAY_KEY = _env("HOSPITAL_SMS_GATEWAY_KEY", cls.SMS_GATEWAY_KEY)
        cfg.PUBLIC_URL = _env("HOSPITAL_PUBLIC_URL", cls.PUBLIC_URL).rstrip("/")
        cfg.CONSULT_REMINDER_MINUTES = _env("HOSPITAL_CONSULT_REMINDER_MINUTES", cls.CONSULT_REMINDER_MINUTES)
        cfg.CONSULT_CHANGE_CUTOFF_MINUTES = _env_int("HOSPITAL_CONSULT_CHANGE_CUTOFF_MINUTES",
                                                     cls.CONSULT_CHANGE_CUTOFF_MINUTES)
        cfg.STUN_URLS = _env("HOSPITAL_STUN_URLS", cls.STUN_URLS)
        cfg.TURN_URLS = _env("HOSPITAL_TURN_URLS", cls.TURN_URLS)
        cfg.TURN_SECRET = _env("HOSPITAL_TURN_SECRET", cls.TURN_SECRET)
        cfg.TURN_TTL_SECONDS = _env_int("HOSPITAL_TURN_TTL_SECONDS", cls.TURN_TTL_SECONDS)
        cfg.CONSULT_JOIN_TOKEN_SECONDS = _env_int("HOSPITAL_CONSULT_JOIN_TOKEN_SECONDS",
                                                  cls.CONSULT_JOIN_TOKEN_SECONDS)
        cfg.CONSULT_CHECKIN_MINUTES = _env_int("HOSPITAL_CONSULT_CHECKIN_MINUTES", cls.CONSULT_CHECKIN_MINUTES)
        cfg.CONSULT_P2P_TIMEOUT_SECONDS = _env_int("HOSPITAL_CONSULT_P2P_TIMEOUT_SECONDS",
                                                   cls.CONSULT_P2P_TIMEOUT_SECONDS)
        cfg.SIGNAL_RATE_LIMIT = _env_int("HOSPITAL_SIGNAL_RATE_LIMIT", cls.SIGNAL_RATE_LIMIT)
        return cfg

    def validate(self) -> None:
        """Refuse settings that would be unsafe in production.

        :raises ConfigError: production with the default secret key or a short one.
        """
        if self.ENV == "production":
            if self.SECRET_KEY == DEFAULT_SECRET_KEY or len(self.SECRET_KEY) < 32:
                raise ConfigError("SECRET_KEY must be set to a random value of 32+ characters in production")
            if self.DATABASE_URL.startswith("sqlite"):
                raise ConfigError("production needs DATABASE_URL pointing at PostgreSQL")
            if self.NOTIFY_SENDER not in ("log", "smtp"):
                raise ConfigError("HOSPITAL_NOTIFY_SENDER must be log or smtp")
            if self.SMS_SENDER not in ("log", "http"):
                raise ConfigError("HOSPITAL_SMS_SENDER must be log or http")
            if self.SMS_SENDER == "http" and not (self.SMS_GATEWAY_URL and self.SMS_GATEWAY_KEY):
                raise ConfigError("the http SMS sender needs HOSPITAL_SMS_GATEWAY_URL and HOSPITAL_SMS_GATEWAY_KEY")


class TestConfig(Config):
    """Fast hashing and no secure-cookie requirement, for the test suite."""

    TESTING = True
    # Other domains' tests sign staff in with a password only; the MFA tests switch this on themselves.
    MFA_REQUIRED_ROLES: tuple[str, ...] = ()
    # Other domains' tests book the next free slot and move or cancel it as the patient; the cutoff tests set
    # their own.
    CONSULT_CHANGE_CUTOFF_MINUTES = 0
    ARGON2_TIME_COST = 1
    ARGON2_MEMORY_COST = 1024
