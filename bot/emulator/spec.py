"""Validation of Bot API requests against the machine-readable spec (``api.json``).

Every parameter is checked for presence (required fields), type (Integer, Float,
String, Boolean, InputFile, ``Array of X``, nested objects recursively, unions and
abstract types with subtypes) and for the limits the field descriptions state
("1-4096 characters after entities parsing", "1-64 bytes", "list of 1-12 ...").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from bot.emulator.markup import ParseError, parse_entities, utf16_len

__all__ = ["ApiSpec", "Upload", "Validation", "load_spec"]

SPEC_PATH = Path(__file__).with_name("api.json")
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_STR_RANGE_RE = re.compile(r"(\d+)-(\d+) (characters|bytes)")
_STR_UPTO_RE = re.compile(r"up to (\d+) (characters|bytes)")
_ARRAY_RANGE_RE = re.compile(r"(?:list of|List of|include|array of) (\d+)-(\d+)")
_ARRAY_MOST_RE = re.compile(r"At most (\d+) [\w ]+ can be specified")
_DISCRIMINATOR_RE = re.compile(r"(?:must be|always) [“\"]?([a-z_]+)[”\"]?")
_INTEGER_RE = re.compile(r"-?\d+")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}

# Inline keyboard buttons must carry exactly one action besides their label.
_BUTTON_LABEL_FIELDS = {"text", "icon_custom_emoji_id", "style"}


@dataclass(frozen=True)
class Upload:
    """A file sent as a multipart part."""

    filename: str
    size: int
    content_type: str = "application/octet-stream"
    # The bytes (kept by the emulator for documents and photos the bot sends).
    content: bytes = field(default=b"", repr=False, compare=False)


@dataclass
class Validation:
    values: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


class _Mismatch(str):
    """An error meaning "this value is not of that type" (other union members may fit)."""


@dataclass
class _Ctx:
    files: Mapping[str, Upload]
    warnings: list[str]


@dataclass(frozen=True)
class _Limit:
    low: int
    high: int
    unit: str  # "characters" | "bytes" | "items"
    after_parsing: bool


def _limit_for(description: str, is_array: bool) -> _Limit | None:
    if is_array:
        match = _ARRAY_RANGE_RE.search(description)
        if match:
            return _Limit(int(match.group(1)), int(match.group(2)), "items", False)
        most = _ARRAY_MOST_RE.search(description)
        if most:
            return _Limit(0, int(most.group(1)), "items", False)
        return None
    match = _STR_RANGE_RE.search(description)
    if match:
        tail = description[match.end() : match.end() + 40]
        return _Limit(
            int(match.group(1)),
            int(match.group(2)),
            match.group(3),
            "after entit" in tail or "after entit" in description,
        )
    upto = _STR_UPTO_RE.search(description)
    if upto:
        return _Limit(0, int(upto.group(1)), upto.group(2), False)
    return None


class ApiSpec:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.version: str = str(data.get("version", ""))
        self.methods: dict[str, dict[str, Any]] = dict(data["methods"])
        self.types: dict[str, dict[str, Any]] = dict(data["types"])
        self._method_index = {name.lower(): name for name in self.methods}
        self._fields: dict[str, dict[str, dict[str, Any]]] = {}
        self._discriminators: dict[str, dict[str, str]] = {}
        for name, entry in [*self.methods.items(), *self.types.items()]:
            self._fields[name] = {f["name"]: f for f in entry.get("fields", [])}
        for name, entry in self.types.items():
            mapping: dict[str, str] = {}
            for subtype in entry.get("subtypes", []) or []:
                for sub_field in self.types.get(subtype, {}).get("fields", []):
                    if sub_field["name"] in ("type", "status", "source"):
                        match = _DISCRIMINATOR_RE.search(sub_field["description"])
                        if match:
                            mapping[match.group(1)] = subtype
                        break
            self._discriminators[name] = mapping

    def canonical_method(self, name: str) -> str | None:
        return self._method_index.get(name.lower())

    def fields_of(self, name: str) -> dict[str, dict[str, Any]]:
        return self._fields.get(name, {})

    def required_fields(self, type_name: str) -> list[str]:
        return [f["name"] for f in self.types[type_name].get("fields", []) if f["required"]]

    # -- validation ---------------------------------------------------------------

    def validate_method(
        self,
        method: str,
        params: Mapping[str, Any],
        files: Mapping[str, Upload] | None = None,
    ) -> Validation:
        """Validate form parameters (strings or :class:`Upload`) of ``method``."""
        result = Validation()
        ctx = _Ctx(files or {}, result.warnings)
        fields = self.fields_of(method)
        for name, spec_field in fields.items():
            if spec_field["required"] and name not in params:
                result.violations.append(f"Bad Request: {name} is empty")
        for name, raw in params.items():
            known = fields.get(name)
            if known is None:
                if not isinstance(raw, Upload) or name not in ctx.files:
                    result.warnings.append(f"unknown parameter {name!r} of {method}")
                continue
            value, errors = self._check_union(known["types"], raw, name, True, ctx)
            if not errors:
                errors = self._check_limits(known, value, raw, params, name, method)
            if errors:
                result.violations.extend(errors)
            else:
                result.values[name] = value
        return result

    def validate_object(self, type_name: str, value: Any) -> list[str]:
        """Validate a decoded JSON value against ``type_name`` (handy for responses)."""
        _, errors = self._check(type_name, value, type_name, False, _Ctx({}, []))
        return list(errors)

    def _check_union(
        self, types: list[str], raw: Any, path: str, top: bool, ctx: _Ctx
    ) -> tuple[Any, list[str]]:
        candidates: list[tuple[int, Any, list[str]]] = []
        decoded = raw
        if top and isinstance(raw, str) and raw[:1] in "[{":
            try:
                decoded = json.loads(raw)
            except ValueError:
                decoded = raw
        for type_name in types:
            scratch = _Ctx(ctx.files, [])
            value, errors = self._check(type_name, raw, path, top, scratch)
            if not errors:
                ctx.warnings.extend(scratch.warnings)
                return value, []
            if type_name == "Integer" and not isinstance(errors[0], _Mismatch):
                return None, errors  # a number, but out of range: no other type may take it
            score = 0
            if isinstance(decoded, dict):
                known = self.fields_of(type_name)
                score = sum(1 for key in decoded if key in known)
            if not all(isinstance(e, _Mismatch) for e in errors):
                score += 1000
            candidates.append((score, value, errors))
        best = max(candidates, key=lambda c: c[0])
        if all(isinstance(e, _Mismatch) for e in best[2]) and len(types) > 1:
            return None, [_Mismatch(f"Bad Request: {path} must be of type {' or '.join(types)}")]
        return None, best[2]

    def _check(
        self, type_name: str, raw: Any, path: str, top: bool, ctx: _Ctx
    ) -> tuple[Any, list[str]]:
        if type_name.startswith("Array of "):
            return self._check_array(type_name[len("Array of ") :], raw, path, top, ctx)
        if type_name == "Integer":
            value: Any = raw
            if top:
                if not isinstance(raw, str) or not _INTEGER_RE.fullmatch(raw.strip()):
                    return None, [_Mismatch(f"Bad Request: {path} must be of type Integer")]
                value = int(raw)
            elif not isinstance(raw, int) or isinstance(raw, bool):
                return None, [_Mismatch(f"Bad Request: {path} must be of type Integer")]
            if not INT64_MIN <= value <= INT64_MAX:
                return None, [f"Bad Request: {path} is out of the 64-bit integer range"]
            return value, []
        if type_name == "Float":
            if top and isinstance(raw, str):
                try:
                    return float(raw), []
                except ValueError:
                    pass
            elif isinstance(raw, int | float) and not isinstance(raw, bool):
                return float(raw), []
            return None, [_Mismatch(f"Bad Request: {path} must be of type Float")]
        if type_name == "String":
            if isinstance(raw, str):
                return raw, []
            return None, [_Mismatch(f"Bad Request: {path} must be of type String")]
        if type_name == "Boolean":
            if top and isinstance(raw, str) and raw.lower() in _BOOLEANS:
                return _BOOLEANS[raw.lower()], []
            if not top and isinstance(raw, bool):
                return raw, []
            return None, [_Mismatch(f"Bad Request: {path} must be of type Boolean")]
        if type_name == "InputFile":
            if isinstance(raw, Upload):
                return raw, []
            if isinstance(raw, str) and raw.startswith("attach://"):
                name = raw[len("attach://") :]
                if name in ctx.files:
                    return ctx.files[name], []
                return None, [f"Bad Request: {path}: file attach://{name} is not uploaded"]
            return None, [_Mismatch(f"Bad Request: {path} must be of type InputFile")]
        if type_name not in self.types:
            return raw, []  # a type the spec does not describe: nothing to check
        value = raw
        if top:
            if not isinstance(raw, str):
                return None, [_Mismatch(f"Bad Request: {path} must be of type {type_name}")]
            try:
                value = json.loads(raw)
            except ValueError:
                return None, [_Mismatch(f"Bad Request: can't parse {path} JSON object")]
        if not isinstance(value, dict):
            return None, [_Mismatch(f"Bad Request: {path} must be of type {type_name}")]
        return self._check_object(type_name, value, path, ctx)

    def _check_array(
        self, item_type: str, raw: Any, path: str, top: bool, ctx: _Ctx
    ) -> tuple[Any, list[str]]:
        value = raw
        if top:
            if not isinstance(raw, str):
                return None, [_Mismatch(f"Bad Request: {path} must be an Array")]
            try:
                value = json.loads(raw)
            except ValueError:
                return None, [_Mismatch(f"Bad Request: can't parse {path} JSON array")]
        if not isinstance(value, list):
            return None, [_Mismatch(f"Bad Request: {path} must be an Array")]
        errors: list[str] = []
        items: list[Any] = []
        for index, item in enumerate(value):
            checked, item_errors = self._check(item_type, item, f"{path}[{index}]", False, ctx)
            errors.extend(item_errors)
            items.append(checked)
        return (None if errors else items), errors

    def _check_object(
        self, type_name: str, value: dict[str, Any], path: str, ctx: _Ctx
    ) -> tuple[Any, list[str]]:
        subtypes = self.types[type_name].get("subtypes") or []
        if subtypes:
            mapping = self._discriminators.get(type_name, {})
            tag = value.get("type", value.get("status", value.get("source")))
            if isinstance(tag, str) and tag in mapping:
                return self._check_object(mapping[tag], value, path, ctx)
            return self._check_union(list(subtypes), value, path, False, ctx)
        fields = self.fields_of(type_name)
        errors: list[str] = []
        for name, spec_field in fields.items():
            if spec_field["required"] and name not in value:
                errors.append(f"Bad Request: {path}.{name} is required in {type_name}")
        for name, item in value.items():
            known = fields.get(name)
            if known is None:
                ctx.warnings.append(f"unknown field {path}.{name} of {type_name}")
                continue
            checked, item_errors = self._check_union(
                known["types"], item, f"{path}.{name}", False, ctx
            )
            if not item_errors:
                item_errors = self._check_limits(
                    known, checked, item, value, f"{path}.{name}", type_name
                )
            errors.extend(item_errors)
        if type_name == "InlineKeyboardButton" and not errors:
            errors.extend(self._check_inline_button(value, path))
        return (None if errors else value), errors

    @staticmethod
    def _check_inline_button(value: dict[str, Any], path: str) -> list[str]:
        errors: list[str] = []
        if not str(value.get("text", "")).strip():
            errors.append(f"Bad Request: {path}.text: inline keyboard button text is empty")
        if not [key for key in value if key not in _BUTTON_LABEL_FIELDS]:
            errors.append(
                f"Bad Request: text buttons are unallowed in the inline keyboard ({path})"
            )
        return errors

    def _check_limits(
        self,
        spec_field: dict[str, Any],
        value: Any,
        raw: Any,
        siblings: Mapping[str, Any],
        path: str,
        owner: str,
    ) -> list[str]:
        is_array = isinstance(value, list)
        if not is_array and not isinstance(value, str):
            return []
        limit = _limit_for(spec_field["description"], is_array)
        if limit is None:
            return []
        name = spec_field["name"]
        if is_array:
            count = len(value)
            if not limit.low <= count <= limit.high:
                return [
                    f"Bad Request: {path} must have {limit.low}-{limit.high} items, got {count}"
                ]
            return []
        text = str(value)
        if limit.unit == "bytes":
            size = len(text.encode("utf-8"))
            if not limit.low <= size <= limit.high:
                prefix = "BUTTON_DATA_INVALID: " if name == "callback_data" else ""
                return [
                    f"Bad Request: {prefix}{path} must be {limit.low}-{limit.high} bytes, "
                    f"got {size}"
                ]
            return []
        if limit.after_parsing:
            mode_field = f"{name}_parse_mode"
            if mode_field not in self.fields_of(owner):
                mode_field = "parse_mode"
            mode = siblings.get(mode_field)
            try:
                text = parse_entities(text, mode if isinstance(mode, str) else None)[0]
            except ParseError as exc:
                return [f"Bad Request: can't parse entities: {exc}"]
            except LookupError:
                return [f"Bad Request: unsupported parse_mode {mode!r}"]
        length = utf16_len(text)
        is_message = owner.startswith(("send", "edit"))
        if limit.low > 0 and not text.strip():
            if is_message and path == "text":
                return ["Bad Request: message text is empty"]
            return [f"Bad Request: {path} is empty"]
        if length > limit.high:
            if is_message and path == "text":
                return ["Bad Request: message is too long"]
            if is_message and path == "caption":
                return ["Bad Request: message caption is too long"]
            return [
                f"Bad Request: {path} must be {limit.low}-{limit.high} characters"
                f"{' after entities parsing' if limit.after_parsing else ''}, got {length}"
            ]
        return []


@cache
def load_spec(path: str | None = None) -> ApiSpec:
    with open(path or SPEC_PATH, encoding="utf-8") as fh:
        return ApiSpec(json.load(fh))
