"""Generate ``docs/configuration.md`` from :class:`service.runtime.settings.ServiceSettings`.

Every field of the settings class becomes one row: its environment variable, type, default,
constraints and the attribute docstring written under it in ``settings.py``; the ``# --- Title ---``
comments of the class become the sections. Run it after changing the settings::

    .venv/bin/python -m tools.gen_config_docs          # rewrite docs/configuration.md
    .venv/bin/python -m tools.gen_config_docs --check  # exit 1 when the file is out of date

``tests/deploy/test_config_docs.py`` fails when the committed file differs from what this renders.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from service.runtime import settings as settings_module
from service.runtime.settings import ENV_PREFIX, ServiceSettings, env_var_name

__all__ = ["OUTPUT", "SettingDoc", "main", "render", "setting_docs"]

OUTPUT = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
"""Where the reference is written."""

_SECTION = re.compile(r"^\s*# -+ (?P<title>.+?) -+\s*$")
_NONE = type(None)
_RST_LITERAL = re.compile(r"``(.+?)``")


@dataclass(frozen=True)
class SettingDoc:
    """What the reference says about one setting."""

    section: str
    field: str
    variable: str
    type: str
    default: str
    constraints: str
    secret: bool
    description: str


def _docstrings_and_sections() -> dict[str, tuple[str, str]]:
    """``field -> (section title, attribute docstring)`` read from the source of the settings class."""
    source = Path(settings_module.__file__).read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = next(
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == ServiceSettings.__name__
    )
    found: dict[str, tuple[str, str]] = {}
    body = cls.body
    for index, node in enumerate(body):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        section = "General"
        for line in reversed(lines[cls.lineno : node.lineno - 1]):
            match = _SECTION.match(line)
            if match:
                section = match.group("title")
                break
        following = body[index + 1] if index + 1 < len(body) else None
        doc = ""
        if (
            isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            doc = " ".join(following.value.value.split())
        found[node.target.id] = (section, doc)
    return found


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        values = [f"`{value}`" for value in get_args(annotation)]
        return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"
    if origin in (Union, types.UnionType):
        members = [arg for arg in get_args(annotation) if arg is not _NONE]
        inner = " or ".join(_type_name(arg) for arg in members)
        return f"{inner} (optional)" if len(members) < len(get_args(annotation)) else inner
    names = {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        Path: "file path",
        SecretStr: "secret",
    }
    if isinstance(annotation, type) and annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    value = field.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == "":
        return '`""` (empty)'
    return f"`{value}`"


def _constraints(field: FieldInfo) -> str:
    parts: list[str] = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            parts.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            parts.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            parts.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            parts.append(f"at least {item.min_length} character{'s' if item.min_length != 1 else ''}")
        elif isinstance(item, annotated_types.MaxLen):
            parts.append(f"at most {item.max_length} characters")
    return ", ".join(parts)


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)


def setting_docs() -> list[SettingDoc]:
    """One :class:`SettingDoc` per settings field, in the order of the class."""
    sources = _docstrings_and_sections()
    docs: list[SettingDoc] = []
    for name, field in ServiceSettings.model_fields.items():
        section, description = sources.get(name, ("General", ""))
        docs.append(
            SettingDoc(
                section=section,
                field=name,
                variable=env_var_name(name),
                type=_type_name(field.annotation),
                default=_default(field),
                constraints=_constraints(field),
                secret=_is_secret(field.annotation),
                description=description,
            )
        )
    return docs


def _cell(text: str) -> str:
    """Markdown for a table cell: reST ``literals`` become `code`, pipes are escaped."""
    return _RST_LITERAL.sub(r"`\1`", text).replace("|", "\\|")


_HEADER = f"""# Configuration reference

<!-- Generated by tools/gen_config_docs.py from service/runtime/settings.py. Do not edit by hand:
     run `make docs` (tests/deploy/test_config_docs.py fails when this file is out of date). -->

Every setting of the service is an environment variable `{ENV_PREFIX}<FIELD>` read by
`service.runtime.settings.ServiceSettings` (pydantic-settings). Values come from, highest first:
keyword overrides in code, the process environment, a `.env` file in the working directory, the
default below. Booleans accept `true`/`false` (also `1`/`0`, `yes`/`no`); names are
case-insensitive. An invalid value stops `arvo run` (and every other service command) with exit
status 1 and one line per problem, naming the variable, the value (masked for secrets) and the
rule, e.g. `invalid setting ARVO_LEASE_TTL_MS='abc': Input should be a valid integer`.

Secret settings are read like the others but never printed: put them in a Kubernetes Secret (see
`deploy/k8s/base/secret.yaml`), not in a ConfigMap. The rules that tie several settings together
(heartbeat below session timeout, handler timeout below lease TTL, ...) are listed in
[operating.md](operating.md#rules-between-settings). OpenTelemetry is configured with the standard
`OTEL_*` variables, not with these.
"""


def render() -> str:
    """The complete Markdown text of ``docs/configuration.md``."""
    out = [_HEADER]
    section = None
    for doc in setting_docs():
        if doc.section != section:
            section = doc.section
            out.append(f"\n## {section}\n")
            out.append("| Variable | Type | Default | Description |")
            out.append("|---|---|---|---|")
        notes = [doc.description]
        if doc.constraints:
            notes.append(f"Must be {doc.constraints}.")
        if doc.secret:
            notes.append("**Secret.**")
        description = " ".join(note for note in notes if note)
        out.append(f"| `{doc.variable}` | {doc.type} | {doc.default} | {_cell(description)} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, verify) ``docs/configuration.md``; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="file to write or check")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
