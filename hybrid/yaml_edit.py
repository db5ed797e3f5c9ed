"""Change one value in a YAML file's text, keeping every comment and the layout around it.

A commented preset or ``app.yaml`` is documentation too: re-dumping it with a YAML library would drop
the comments, so commands that switch a setting (``hybrid app fit`` sets ``router.kind``; ``hybrid
router fit-rules --update`` sets ``rules.extract_min``) edit the one line instead::

    text = set_yaml_value(path.read_text(), "router", "kind", "learned")
    atomic_write_text(path, text)

Only block-style two-level keys (``section:`` then an indented ``key: value``) are edited; anything
else (flow style ``router: {kind: rules}``) is refused with a message saying what to change by hand.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from core.errors import ConfigError


def yaml_scalar(value: Any) -> str:
    """A scalar as YAML writes it: ``null``, ``true``, ``0.42``, ``learned``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6))
    text = yaml.safe_dump(value, default_flow_style=True).strip()
    return text[:-4].rstrip() if text.endswith("\n...") or text.endswith(" ...") else text


def set_yaml_value(text: str, section: str, key: str, value: Any, *, comment: str | None = None) -> str:
    """``text`` with ``section.key`` set to ``value``; the line's own comment stays unless ``comment``
    replaces it. A missing key is added as the section's first entry, a missing section at the end."""
    lines = text.splitlines(keepends=True)
    val = yaml_scalar(value)
    tail = f"  # {comment}" if comment else ""  # for a line this adds
    head = re.compile(rf"^{re.escape(section)}:[ \t]*(#.*)?$")
    start = next((i for i, ln in enumerate(lines) if head.match(ln.rstrip("\r\n"))), None)
    if start is None and any(ln.startswith(f"{section}:") for ln in lines):  # flow style or a scalar
        raise ConfigError(f"{section} is not a block of keys; set {section}.{key}: {val} by hand")
    if start is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        new = text + sep + f"\n{section}:\n  {key}: {val}{tail}\n"
    else:
        end = start + 1
        while end < len(lines):
            s = lines[end]
            if s.strip() and not s[0].isspace() and not s.lstrip().startswith("#"):
                break
            end += 1
        child = re.compile(rf"^([ \t]+){re.escape(key)}:([ \t]*)(.*?)([ \t]+#.*)?$")
        indent = None
        for i in range(start + 1, end):
            ln = lines[i].rstrip("\r\n")
            if ln.strip() and not ln.lstrip().startswith("#"):
                lead = ln[: len(ln) - len(ln.lstrip())]
                indent = indent or lead
                m = child.match(ln)
                if m and m.group(1) == indent:
                    if m.group(3).strip().startswith(("{", "[", "|", ">")) or m.group(3).strip() == "":
                        raise ConfigError(f"{section}.{key} is not a plain value; set it to {val} by hand")
                    old_comment = m.group(4) or ""  # with the white space before it
                    note = f"# {comment}" if comment else old_comment.lstrip()
                    body = f"{m.group(1)}{key}:{m.group(2) or ' '}{val}"
                    if note:  # the comment stays in its column when the new value still fits before it
                        col = len(ln) - len(old_comment.lstrip()) if old_comment else 0
                        body = (body.ljust(col) if len(body) + 1 < col else body + "  ") + note
                    eol = lines[i][len(ln):]
                    lines[i] = f"{body}{eol or chr(10)}"
                    break
        else:
            lines.insert(start + 1, f"{indent or '  '}{key}: {val}{tail}\n")
        new = "".join(lines)
    try:
        data = yaml.safe_load(new)
    except yaml.YAMLError as e:
        raise ConfigError(f"editing {section}.{key} would break the YAML ({e}); set it by hand") from None
    got = (data or {}).get(section) if isinstance(data, dict) else None
    if not isinstance(got, dict) or got.get(key) != yaml.safe_load(val):
        raise ConfigError(f"could not set {section}.{key} in this YAML's layout; set it to {val} by hand")
    return new
