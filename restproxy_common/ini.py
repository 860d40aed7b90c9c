"""One INI loader for the server's restproxy.ini and the agent's restproxy_agent.ini.

Options fill the fields of an attrs class by name, converted to the field's type (bool,
int, float or text). ``[DEFAULT]`` is an ordinary section: its options do not leak into
the others. Options the class does not know are not an error (a deployment carries
options of other releases), but they are returned as ``[SECTION] key`` so that each
service logs them at start (``log_ignored``): a typo must not pass silently.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from twisted.logger import Logger


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


@attrs.frozen
class Loaded:
    values: dict[str, Any]  # field name -> converted value (file, then overrides)
    ignored: tuple[str, ...]  # "[SECTION] key" of each option the class does not know


def load_ini(
    path: str | None,
    schema: type,
    overrides: Mapping[str, Any] | None = None,
    aliases: Mapping[str, str] | None = None,
    relative_paths: Iterable[str] = (),
    reserved: Iterable[str] = (),
    own_sections: Iterable[str] = (),
) -> Loaded:
    """Read ``path`` (if given) for the fields of the attrs class ``schema``, then apply ``overrides`` (None: not given).

    ``aliases``: old option name -> field name; ``relative_paths``: fields holding a path, resolved
    against the file's directory; ``reserved``: fields that are not options (treated as unknown);
    ``own_sections``: sections read by ``load_section`` into their own class (skipped here).
    """
    fields = {f.name: f for f in attrs.fields(schema) if f.name not in set(reserved)}
    values: dict[str, Any] = {}
    ignored: list[str] = []
    if path:
        parser = configparser.ConfigParser(interpolation=None, default_section="\x00none")
        try:
            if not parser.read(path):
                raise ConfigError(f"cannot read config file {path}")
        except configparser.Error as e:
            raise ConfigError(f"{path}: {e}") from None
        for section in parser.sections():
            if section.lower() in {s.lower() for s in own_sections}:
                continue
            for key, text in parser.items(section):
                name = (aliases or {}).get(key, key)
                if name not in fields:
                    ignored.append(f"[{section}] {key}")
                    continue
                values[name] = convert(fields[name].type, section, key, text)
        base_dir = os.path.dirname(os.path.abspath(path))
        for name in relative_paths:
            if values.get(name) and not os.path.isabs(values[name]):
                values[name] = os.path.join(base_dir, values[name])
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Loaded(values, tuple(ignored))


def load_section(path: str | None, section: str, schema: type, relative_paths: Iterable[str] = ()) -> Loaded:
    """One section (a name several sections share, e.g. ``auth_url`` in ``[keystone_authtoken]`` and ``[nova]``)
    read into its own attrs class ``schema``; a missing file or section gives the class defaults."""
    fields = {f.name: f for f in attrs.fields(schema)}
    values: dict[str, Any] = {}
    ignored: list[str] = []
    if not path:
        return Loaded(values, ())
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00none")
    try:
        parser.read(path)
    except configparser.Error as e:
        raise ConfigError(f"{path}: {e}") from None
    name = next((s for s in parser.sections() if s.lower() == section.lower()), None)
    if name is None:
        return Loaded(values, ())
    for key, text in parser.items(name):
        if key not in fields:
            ignored.append(f"[{name}] {key}")
            continue
        values[key] = convert(fields[key].type, name, key, text)
    base_dir = os.path.dirname(os.path.abspath(path))
    for key in relative_paths:
        if values.get(key) and not os.path.isabs(values[key]):
            values[key] = os.path.join(base_dir, values[key])
    return Loaded(values, tuple(ignored))


def convert(kind: Any, section: str, key: str, text: str) -> Any:
    """``text`` as a ``kind`` (bool, int, float; anything else: the stripped text); a ConfigError names the option."""
    stripped = text.strip()
    if kind in (bool, "bool"):
        if stripped.lower() in ("1", "true", "yes", "on"):
            return True
        if stripped.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"[{section}] {key}: '{text}' is not a boolean")
    for number, what in ((int, "an integer"), (float, "a number")):
        if kind in (number, number.__name__):
            try:
                return number(stripped)
            except ValueError:
                raise ConfigError(f"[{section}] {key}: '{text}' is not {what}") from None
    return stripped


def log_ignored(log: Logger, ignored: Iterable[str]) -> None:
    """One warning per option that the loaded file has and the service does not know."""
    for option in ignored:
        log.warn("ignoring unknown option {option}", option=option)
