"""`sop init`: a new playbook from one of the shipped playbooks, or a minimal skeleton."""

from __future__ import annotations

import os
import re
from pathlib import Path

TEMPLATES = {
    "lifecycle": "community-lifecycle.yaml",
    "brand": "brand-community.yaml",
    "paid": "paid-knowledge.yaml",
    "developer": "developer-discord.yaml",
}
MINIMAL = """\
# yaml-language-server: $schema={schema}
playbook: {name}
title: {name}
timezone: Asia/Shanghai
community: {{type: user-value, platform: wecom-group, capacity: 500}}

roles:
  ops: {{title: 社群运营, headcount: 1}}

backends:
  group: {{type: console}}

defaults: {{backend: group, owner: ops, quiet_hours: "22:00-08:00"}}

stages:
  cold-start:
    title: 启动期
    duration: {{min: 30d, max: 60d}}
    actions:
      welcome: {{on: member.joined, within: 24h, do: message, to: member, template: welcome}}
      morning-topic: {{cron: "0 8 * * *", do: post, template: morning}}
    exit:
      when: members >= 200 and daily_speak_rate >= 20%
      deadline: {{after: 60d, then: {{alert: ops}}}}

templates:
  welcome: 欢迎 {{{{ member.name }}}} 加入！请先阅读群规，并做个自我介绍～
  morning: 早安！今日话题：你今天最重要的一件事是什么？
"""


class ScaffoldError(Exception):
    """The playbook cannot be written."""


def playbooks_dir() -> Path:
    """The shipped playbooks: the source tree, else the installed package data."""
    local = Path(__file__).resolve().parent.parent / "playbooks"
    if local.is_dir():
        return local
    from importlib.util import find_spec

    spec = find_spec("engine.playbooks")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else local


def scaffold(name: str, template: str, directory: str, *, force: bool = False) -> str:
    """Write NAME.yaml into `directory` and return its path."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ScaffoldError(f"{name!r} is not a playbook id: use lower-case letters, digits, - _")
    if template != "minimal" and template not in TEMPLATES:
        raise ScaffoldError(
            f"unknown template {template!r}; choose minimal or " + ", ".join(TEMPLATES)
        )
    os.makedirs(directory, exist_ok=True)
    target = Path(directory) / f"{name}.yaml"
    if target.exists() and not force:
        raise ScaffoldError(f"{target} exists; use --force to overwrite")
    schema = _schema_ref(Path(directory))
    if template == "minimal":
        text = MINIMAL.format(name=name, schema=schema)
    else:
        src = playbooks_dir() / TEMPLATES[template]
        if not src.is_file():
            raise ScaffoldError(f"template file {src} is missing from this installation")
        text = src.read_text(encoding="utf-8")
        text = re.sub(
            r"^# yaml-language-server: \$schema=.*$",
            f"# yaml-language-server: $schema={schema}",
            text,
            count=1,
            flags=re.M,
        )
        text = re.sub(r"^playbook: .*$", f"playbook: {name}", text, count=1, flags=re.M)
        if "fragment: fragments/" in text:
            # keep includes working from the new location
            rel = os.path.relpath(playbooks_dir() / "fragments", Path(directory).resolve())
            text = text.replace("fragment: fragments/", f"fragment: {rel}/")
    target.write_text(text, encoding="utf-8")
    return str(target)


def _schema_ref(directory: Path) -> str:
    """A relative path to the schema when it is on disk nearby, else the published URL."""
    local = Path(__file__).resolve().parent.parent / "schemas" / "playbook.schema.json"
    if local.is_file():
        try:
            return os.path.relpath(local, directory.resolve())
        except ValueError:
            return str(local)
    return "https://sop.dev/schemas/playbook.schema.json"
