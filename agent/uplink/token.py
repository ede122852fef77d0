"""Loading and storing secrets: the uplink token and the MQTT password.

A secret comes from the first of these that has it:

1. ``$CREDENTIALS_DIRECTORY/<credential name>``, a file systemd provides
   for ``LoadCredential=`` or ``LoadCredentialEncrypted=``;
2. an environment variable (``CMAGENT_UPLINK__TOKEN``,
   ``CMAGENT_MQTT__PASSWORD``);
3. a secret file, which must be a regular file (not a symbolic link), owned
   by the user running the agent, with no permissions for group or others.

Values are held as ``pydantic.SecretStr``, whose ``repr`` and ``str`` hide
them. No message raised or logged here contains a secret.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import SecretStr

from agent.errors import ConfigError
from agent.settings import UplinkSettings

UPLINK_CREDENTIAL: Final = "uplink-token"
UPLINK_ENV_VAR: Final = "CMAGENT_UPLINK__TOKEN"
MQTT_CREDENTIAL: Final = "mqtt-password"
MQTT_ENV_VAR: Final = "CMAGENT_MQTT__PASSWORD"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedSecret:
    """A secret and where it came from (``source`` never contains the value)."""

    value: SecretStr
    source: str


def load_secret(
    credential_name: str,
    env_var: str,
    file: Path | None,
    *,
    environ: Mapping[str, str] = os.environ,
) -> LoadedSecret | None:
    """Load a secret from credentials, environment or file, in that order.

    Returns:
        The secret, or None when no source provides one.

    Raises:
        ConfigError: a source exists but is unusable: an empty value, a
            value with a control character such as a line break, or a
            secret file that is a symbolic link, not a regular file, owned
            by another user or readable by group or others.
    """
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        path = Path(credentials) / credential_name
        if path.exists():
            text = _read_text(path, env_var=env_var, check_owner=False)
            return LoadedSecret(
                value=_non_empty(text, f"credential {path}"),
                source=f"credential {credential_name}",
            )

    if env_var in environ:
        value = _non_empty(environ[env_var], f"environment variable {env_var}")
        return LoadedSecret(value=value, source=f"environment {env_var}")

    if file is not None:
        text = _read_text(file, env_var=env_var, check_owner=True)
        return LoadedSecret(
            value=_non_empty(text, f"file {file}"), source=f"file {file}"
        )
    return None


def _non_empty(text: str, where: str) -> SecretStr:
    value = text.strip()
    if not value:
        raise ConfigError(f"secret in {where} is empty; store a non-empty value")
    if _has_control_character(value):
        raise ConfigError(
            f"secret in {where} contains a control character such as a line "
            "break; store it as one line of text"
        )
    return SecretStr(value)


def _has_control_character(value: str) -> bool:
    # A line break or other control character cannot go into an HTTP header
    # and is almost always a paste error.
    return any(ord(char) < 0x20 or ord(char) == 0x7F for char in value)


def _read_text(path: Path, *, env_var: str, check_owner: bool) -> str:
    """Read a secret file, refusing symbolic links and loose permissions."""
    fix = f"write it again with `cmagent token set --file {path}`"
    try:
        # O_NONBLOCK keeps a FIFO planted at the path from blocking the open.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ConfigError(
            f"secret file {path} not found; {fix}, or set {env_var}"
        ) from None
    except OSError as exc:
        if os.path.islink(path):
            raise ConfigError(
                f"secret file {path} is a symbolic link, expected a regular file; {fix}"
            ) from None
        raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from None

    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"secret file {path} is not a regular file; {fix}")
        if check_owner:
            _check_owner_and_mode(path, info)
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read()
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"secret file {path} is not UTF-8 text; {fix}") from None


def _check_owner_and_mode(path: Path, info: os.stat_result) -> None:
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ConfigError(
            f"secret file {path} has mode {mode:04o}, expected 0600 or"
            f" stricter; run `chmod 600 {path}`"
        )
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"secret file {path} is owned by uid {info.st_uid}, expected the"
            f" agent's uid {os.geteuid()}; run `chown {os.geteuid()} {path}`"
            f" or write it again with `cmagent token set --file {path}`"
        )


def write_secret_file(path: Path, value: str) -> None:
    """Write a secret to ``path`` atomically with mode 0600.

    The value goes to a new temporary file in the same directory (created
    exclusively, so no other file is followed or reused), is flushed to
    disk, then renamed over ``path``.

    Raises:
        ConfigError: the value is empty, contains a control character, or
            the file cannot be written.
    """
    value = value.strip()
    if not value:
        raise ConfigError(f"refusing to write an empty secret to {path}")
    if _has_control_character(value):
        raise ConfigError(
            f"refusing to write a secret with a control character such as a "
            f"line break to {path}; the secret must be one line of text"
        )
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temp, flags, 0o600)
        try:
            os.write(fd, value.encode("utf-8") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
        _fsync_directory(path.parent)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write secret file {path}: {exc.strerror}") from None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TokenProvider:
    """The uplink token of the active endpoint, reloadable on demand.

    Args:
        settings: the uplink settings; ``environment`` picks the endpoint
            whose ``token_file`` is read.
        environ: the environment to read credentials and variables from.
        default_file: the file read when the endpoint names none, usually
            ``<state_dir>/uplink-token``.
    """

    def __init__(
        self,
        settings: UplinkSettings,
        environ: Mapping[str, str] = os.environ,
        *,
        default_file: Path | None = None,
    ) -> None:
        endpoint = getattr(settings, settings.environment)
        self.environment = settings.environment
        self.token_file: Path | None = endpoint.token_file or default_file
        self._environ = environ
        self._source: str | None = None

    def __repr__(self) -> str:
        return (
            f"TokenProvider(environment={self.environment!r},"
            f" token_file={self.token_file!s}, source={self._source!r})"
        )

    @property
    def source(self) -> str | None:
        """Where the last loaded token came from, or None before ``load``."""
        return self._source

    def load(self) -> SecretStr:
        """Read the token again from the first source that has one.

        Raises:
            ConfigError: no source has a token, or the source is unusable.
        """
        loaded = load_secret(
            UPLINK_CREDENTIAL,
            UPLINK_ENV_VAR,
            self.token_file,
            environ=self._environ,
        )
        if loaded is None:
            raise ConfigError(
                f"no uplink token for the {self.environment} endpoint: set"
                f" {UPLINK_ENV_VAR}, provide the systemd credential"
                f" {UPLINK_CREDENTIAL}, or store one with `cmagent token set`"
            )
        self._source = loaded.source
        return loaded.value
