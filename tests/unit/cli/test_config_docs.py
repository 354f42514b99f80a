"""The docs as a reader finds them: docs/configuration.md says what the Settings say, the
README's Quickstart is two commands, and the links of the README and the pages it sends
readers to lead somewhere."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from chatrelay.cli import config_docs
from chatrelay.config import Settings, UpstreamSpec

ROOT = Path(__file__).resolve().parents[3]
REGENERATE = "run: .venv/bin/python -m chatrelay.cli.config_docs > docs/configuration.md"


def test_configuration_page_is_what_the_settings_describe() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == config_docs.render(), f"docs/configuration.md is stale; {REGENERATE}"


def test_every_setting_is_described_in_one_section_of_the_page() -> None:
    placed = Counter(name for _, names in config_docs.SECTIONS for name in names)
    assert set(placed) == set(Settings.model_fields), (
        "every Settings field belongs in exactly one of config_docs.SECTIONS: "
        f"missing {sorted(set(Settings.model_fields) - set(placed))}, "
        f"unknown {sorted(set(placed) - set(Settings.model_fields))}"
    )
    assert [name for name, count in placed.items() if count > 1] == []
    undescribed = [
        f"{model.__name__}.{name}"
        for model in (Settings, UpstreamSpec)
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert undescribed == [], "give these a description= in config/"


def test_the_page_names_the_variables_settings_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """A row's variable is the one Settings really reads: set it, and the field changes."""
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([A-Z0-9_]+)` \| `([a-z0-9_]+)` \|", page, re.MULTILINE))
    assert rows["LIVEPEER_GATEWAY_URL"] == "livepeer_gateway_urls"
    assert rows["CHATRELAY_PORT"] == "port"
    assert len(rows) == len(Settings.model_fields)
    env = {
        "LIVEPEER_GATEWAY_URL": "http://a.example,http://b.example",
        "OPENAI_API_KEY": "sk-test",
        "CHATRELAY_PORT": "8123",
        "CHATRELAY_RATE_LIMIT": "5/10s",
        "CHATRELAY_TRUSTED_PROXIES": "10.0.0.0/8",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.livepeer_gateway_urls == ["http://a.example", "http://b.example"]
    assert settings.openai_api_key == "sk-test"
    assert settings.port == 8123
    assert settings.rate_limit == "5/10s"
    assert settings.trusted_proxies == ["10.0.0.0/8"]
    for name in env:
        assert name in rows


def test_readme_quickstart_is_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    seen: Counter[str] = Counter()
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE):
        slug = _slug(heading)
        anchors.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    anchors.update(re.findall(r'<a id="([^"]+)"></a>', text))  # explicit anchors, as GitHub's
    return anchors


# The README and the pages made from it (the other docs have their own owners and tests).
LINKED_PAGES = ("README.md", "CHANGELOG.md", "docs/configuration.md", "docs/api.md")
LINKED_PAGES += ("docs/operations.md", "docs/page.md", "docs/spending.md")


def test_links_of_the_readme_and_its_pages_lead_somewhere() -> None:
    broken = []
    for name in LINKED_PAGES:
        page = ROOT / name
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not followed offline
            file_part, _, anchor = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            if not linked.exists():
                broken.append(f"{name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{name}: {target} (no such heading)")
    assert broken == []
