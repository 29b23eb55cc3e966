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
    local = Path(__file__).resolve().parents[2] / "playbooks"
    if local.is_dir():
        return local
    from importlib.util import find_spec

    spec = find_spec("sop.engine.playbooks")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else local


def scaffold(name: str, template: str, directory: str, *, force: bool = False) -> str:
    """Write NAME.yaml (and the fragments it includes) into `directory`; return its path.

    Every check happens before the first byte is written, so a refusal leaves nothing behind.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise ScaffoldError(f"{name!r} is not a playbook id: use lower-case letters, digits, - _")
    if template != "minimal" and template not in TEMPLATES:
        raise ScaffoldError(
            f"unknown template {template!r}; choose minimal or " + ", ".join(TEMPLATES)
        )
    folder = Path(directory)
    _check_folder(folder, "--dir")
    target = folder / f"{name}.yaml"
    _check_target(target, force)
    # The schemas go beside the playbook, so the modelines resolve wherever the folder is moved.
    from .schema import schema_text

    schema = "playbook.schema.json"
    files: dict[Path, str] = {}
    for kind in ("playbook", "fragment"):
        body = schema_text(f"{kind}.schema.json")
        if _differs(folder / f"{kind}.schema.json", body, force=True):
            files[folder / f"{kind}.schema.json"] = body
    if template == "minimal":
        text = MINIMAL.format(name=name, schema=schema)
    else:
        text = _shipped(playbooks_dir() / TEMPLATES[template])
        text = re.sub(
            r"^# yaml-language-server: \$schema=.*$",
            f"# yaml-language-server: $schema={schema}",
            text,
            count=1,
            flags=re.M,
        )
        text = re.sub(r"^playbook: .*$", f"playbook: {name}", text, count=1, flags=re.M)
        # Includes stay inside the new playbook's folder (its default root): copy the fragments.
        for rel in sorted(set(re.findall(r"fragment: (fragments/[A-Za-z0-9_.-]+)", text))):
            frag = folder / rel
            body = re.sub(
                r"^# yaml-language-server: \$schema=.*$",
                "# yaml-language-server: $schema=../fragment.schema.json",
                _shipped(playbooks_dir() / rel),
                count=1,
                flags=re.M,
            )
            if _differs(frag, body, force):
                files[frag] = body
        if files:
            _check_folder(folder / "fragments", "fragments folder", missing_ok=True)
    files[target] = text
    for path, body in files.items():
        _write(path, body)
    return str(target)


def _check_folder(folder: Path, what: str, *, missing_ok: bool = False) -> None:
    if folder.is_dir():
        return
    if os.path.lexists(folder):
        raise ScaffoldError(f"{what} {str(folder)!r} is not a folder")
    if missing_ok:
        return
    above = folder.absolute().parent
    while not os.path.lexists(above) and above != above.parent:
        above = above.parent
    if not above.is_dir():
        raise ScaffoldError(f"{what} {str(folder)!r} is under {str(above)!r}, which is a file")
    raise ScaffoldError(f"{what} {str(folder)!r} does not exist; create it first")


def _check_target(target: Path, force: bool) -> None:
    if target.is_symlink() or not os.path.lexists(target):
        return  # a symlink is replaced, never written through
    if target.is_dir():
        raise ScaffoldError(f"{target} exists and is a folder")
    if not target.is_file():
        raise ScaffoldError(f"{target} exists and is not a regular file")
    if not force:
        raise ScaffoldError(f"{target} exists; use --force to overwrite")


def _differs(path: Path, body: str, force: bool) -> bool:
    """True when `path` must be written; an existing different file needs --force."""
    if not os.path.lexists(path):
        return True
    if path.is_file() and not path.is_symlink():
        try:
            if path.read_text(encoding="utf-8") == body:
                return False
        except (OSError, UnicodeDecodeError):
            pass
    _check_target(path, force)
    return True


def _shipped(src: Path) -> str:
    if not src.is_file():
        raise ScaffoldError(f"template file {src} is missing from this installation")
    return src.read_text(encoding="utf-8")


def _write(path: Path, text: str) -> None:
    """Write via a temporary file and a rename: never through a symlink, never half a file."""
    import tempfile

    try:
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; a scaffold is an ordinary file
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise ScaffoldError(f"cannot write {path}: {e.strerror or e}") from None
