"""The one settings list: documented, parsed, and the README's promises kept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nazzil import settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "settings.md"
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"

_ROW = re.compile(r"^\|\s*`(NAZZIL_[A-Z0-9_]+)`\s*\|\s*([^|]*?)\s*\|\s*(.+?)\s*\|\s*$")


def documented() -> dict[str, tuple[str, str]]:
    """Map each variable in the table of docs/settings.md to (default, help)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in DOCS.read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} is documented twice"
            rows[m.group(1)] = (m.group(2), m.group(3))
    return rows


def test_every_setting_is_documented() -> None:
    missing = [s.key for s in settings.SETTINGS if s.key not in documented()]
    assert not missing, f"add these to docs/settings.md: {missing}"


def test_every_documented_setting_exists() -> None:
    keys = {s.key for s in settings.SETTINGS}
    stale = [key for key in documented() if key not in keys]
    assert not stale, f"docs/settings.md documents settings that do not exist: {stale}"


@pytest.mark.parametrize("setting", settings.SETTINGS, ids=lambda s: s.name)
def test_documented_default_matches(setting: settings.Setting) -> None:
    rows = documented()
    if setting.key not in rows:
        pytest.skip("undocumented: reported by test_every_setting_is_documented")
    default, help_text = rows[setting.key]
    expected = "(empty)" if setting.default in ("", None) else f"`{setting.default}`"
    assert default == expected
    assert help_text.strip(), "every setting says what it does"


@pytest.mark.parametrize("setting", settings.SETTINGS, ids=lambda s: s.name)
def test_setting_is_well_formed(setting: settings.Setting) -> None:
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", setting.name)
    assert setting.key == "NAZZIL_" + setting.name
    assert setting.help.strip()
    setting.parse(setting.default)  # every default parses


def test_names_are_unique() -> None:
    names = [s.name for s in settings.SETTINGS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("1048576", 1048576),
        ("64K", 64 * 1024),
        ("500M", 500 * 1024**2),
        ("2G", 2 * 1024**3),
        ("1T", 1024**4),
        ("1.5K", 1536),
        ("10MB", 10 * 1024**2),
        ("2GiB", 2 * 1024**3),
        (" 3 m ", 3 * 1024**2),
        ("7b", 7),
        (123, 123),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert settings.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1", "1X", "1.2.3G", "G", "1 0M", "0x10"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        settings.parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("6h", 21600.0),
        ("7d", 604800.0),
        ("1.5h", 5400.0),
        ("2.5", 2.5),
        (" 2 M ", 120.0),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_parse_seconds(text: str | float, seconds: float) -> None:
    assert settings.parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-5", "5w", "1h30m", "m"])
def test_parse_seconds_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        settings.parse_seconds(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False), ("no", False),
     ("", False), (True, True), (False, False)],
)  # fmt: skip
def test_parse_bool(text: str | bool, value: bool) -> None:
    assert settings.parse_bool(text) is value


def test_parse_list() -> None:
    assert settings.parse_list(" a, b:80 ,,10.0.0.0/8 ") == ("a", "b:80", "10.0.0.0/8")
    assert settings.parse_list("") == ()
    assert settings.parse_list(["x", "y"]) == ("x", "y")


def test_from_environ_reads_only_set_values() -> None:
    values = settings.from_environ(
        {"NAZZIL_MAX_FILESIZE": "2G", "NAZZIL_WORKERS": "4", "NAZZIL_REDIS_URL": "", "HOME": "/x"}
    )
    assert values == {"NAZZIL_MAX_FILESIZE": 2 * 1024**3, "NAZZIL_WORKERS": 4}


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("NAZZIL_MAX_FILESIZE", "huge", "not a size"),
        ("NAZZIL_RETENTION", "forever", "not a duration"),
        ("NAZZIL_WORKERS", "two", "invalid literal"),
        ("NAZZIL_FETCH_TIMEOUT", "-1", "not a duration"),
    ],
)
def test_bad_environment_value_names_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        settings.from_environ({name: value})
    message = str(excinfo.value)
    assert message.startswith(f"{name}: ")
    assert fragment in message
    assert repr(value) in message or value in message


def test_normalize_accepts_both_spellings() -> None:
    values = settings.normalize({"MAX_BODY": "1K", "NAZZIL_WORKERS": "3", "TESTING": True})
    assert values == {"NAZZIL_MAX_BODY": 1024, "NAZZIL_WORKERS": 3, "TESTING": True}


@pytest.mark.parametrize(
    ("config", "environ", "mode"),
    [
        ({}, {}, "single"),
        ({}, {"VERCEL": "1"}, "serverless"),
        ({"NAZZIL_REDIS_URL": "redis://127.0.0.1:6379/0"}, {}, "cluster"),
        ({"NAZZIL_MODE": "single"}, {"VERCEL": "1"}, "single"),
        ({"NAZZIL_MODE": "Serverless"}, {}, "serverless"),
        ({"NAZZIL_MODE": "nonsense"}, {}, "single"),
    ],
)
def test_mode(config: dict, environ: dict, mode: str) -> None:
    assert settings.mode(config, environ) == mode


# ------------------------------------------------------------------- README promises


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert m, f"README.md has a '## {title}' section"
    return m.group(1)


def _commands(section: str) -> list[str]:
    blocks = re.findall(r"```(?:sh|bash|console)?\n(.*?)```", section, re.S)
    assert blocks, "the section shows its commands in a code block"
    return [line.strip() for line in blocks[0].splitlines() if line.strip()]


def test_quick_start_is_two_commands() -> None:
    commands = _commands(_section("Quick start"))
    assert len(commands) == 2
    assert commands[0].startswith("pip install")
    assert commands[1] == "nazzil serve"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    commands = _commands(_section("Tests"))
    assert len(commands) == 1, "Tests: one command"
    ci_lines = [line.strip() for line in CI.read_text(encoding="utf-8").splitlines()]
    assert commands[0] in ci_lines
    assert CI.stat().st_mode & 0o111, ".ci/run is executable"


def test_readme_has_a_vercel_deploy_section() -> None:
    deploy = _section("Deploy")
    assert "Vercel" in deploy and "vercel.json" in deploy
