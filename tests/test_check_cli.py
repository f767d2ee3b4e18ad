"""`relay check`: exit 0 with a one-line summary, or exit 1 listing every problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay.cli import main
from tests.conftest import ConfigWriter

GOOD = """\
store: "sqlite:///var/relay.db"
sources:
  shop:
    path: /hooks/shop
    verify: {scheme: hmac-sha256, secret: "${SHOP_SECRET:-dev-secret}", header: X-Signature}
targets:
  audit:
    kind: http
    url: "https://audit.example.com/events/{{ event.type }}"
    template: envelope.j2
    retry: {initial: 500ms, max_interval: 5m, max_elapsed: 24h}
  screen:
    kind: console
routes:
  - sources: [shop]
    types: ["order.*"]
    when: "event.payload.amount > 100"
    targets: [audit]
  - targets: [screen]
"""
TEMPLATES = {"envelope.j2": '{"id": {{ event.id | json }}}'}

BROKEN = """\
store: "sqlite:///var/relay.db"
colour: blue
sources:
  shop: {path: /hooks/shop, verify: {scheme: hmac-sha256, secret: "${SHOP_SECRET}", header: X}}
targets:
  audit:
    kind: http
    url: "https://audit.example.com/in"
    template: missing.j2
    retry: {max_elapsed: 15x}
routes:
  - {when: "event.type ==", targets: [audit, billing]}
"""
BROKEN_PROBLEMS = [
    "sources.shop.verify.secret: environment variable SHOP_SECRET is not set "
    "(and has no :-default)",
    'targets.audit.template: "missing.j2" not found in templates/',
    'targets.audit.retry.max_elapsed: invalid duration "15x" (use e.g. 500ms, 15s, 5m, 24h, 3d)',
    "routes[0].when: invalid expression: unexpected 'end of template'",
    "colour: unknown key; valid keys here: listen, admin, store, retention, limits, templates_dir, "
    "sources, targets, routes",
    'routes[0].targets[1]: no target named "billing"; targets are: audit',
]


@pytest.fixture(autouse=True)
def _no_shop_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOP_SECRET", raising=False)


def test_check_ok_prints_one_summary_line_and_exits_0(
    write_config: ConfigWriter, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(GOOD, TEMPLATES)
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    store = f"sqlite:///{tmp_path / 'var' / 'relay.db'}"
    assert out == (
        f"{path}: OK: 1 sources, 2 targets, 2 routes, store {store},"
        " templates rendered against the shipped samples\n"
    )
    assert err == ""
    assert not (tmp_path / "var").exists()  # check opens no store


def test_check_warns_about_an_unverified_source_on_stderr(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config("sources: {open: {path: /hooks/open}}\n")
    assert main(["check", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: OK: 1 sources, 0 targets, 0 routes")
    assert err == (
        "warning: sources.open: no verify: requests to /hooks/open are not authenticated\n"
    )


def test_check_lists_every_problem_and_exits_1(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(BROKEN)
    assert main(["check", "-c", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: {len(BROKEN_PROBLEMS)} problem(s):",
        *(f"  {problem}" for problem in BROKEN_PROBLEMS),
    ]


def test_check_reports_compile_errors_of_a_valid_schema(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(GOOD, {"envelope.j2": '{"id": {{ event.id | json }}\n{% endif %}'})
    assert main(["check", "-c", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"{path}: 1 problem(s):",
        "  targets.audit.template: \"envelope.j2\" line 2: Encountered unknown tag 'endif'.",
    ]


def test_check_uses_the_environment(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config('listen: "127.0.0.1:${RELAY_CHECK_PORT}"\n')
    assert main(["check", "-c", str(path)]) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  listen: environment variable RELAY_CHECK_PORT is not set (and has no :-default)"
    ]
    monkeypatch.setenv("RELAY_CHECK_PORT", "9000")
    assert main(["check", "-c", str(path)]) == 0


def test_check_of_a_missing_file_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "absent.yaml"
    assert main(["check", "-c", str(path)]) == 1
    assert capsys.readouterr().err == (
        f"{path}: 1 problem(s):\n  {path}: cannot read: No such file or directory\n"
    )


def test_check_without_config_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["check"])
    assert caught.value.code == 2
    assert "the following arguments are required: -c/--config" in capsys.readouterr().err


def test_check_never_prints_a_secret(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    yaml_text = """\
        store: "postgresql://relay:db-passw0rd@db/relay"
        targets:
          a:
            kind: http
            url: "http://h/"
            sign: {scheme: standard-webhooks, secret: "not-whsec-s3cret"}
    """
    assert main(["check", "-c", str(write_config(yaml_text))]) == 1
    out, err = capsys.readouterr()
    for secret in ("db-passw0rd", "not-whsec-s3cret"):
        assert secret not in out + err


@pytest.mark.parametrize(("yaml_text", "code"), [(GOOD, 0), (BROKEN, 1)], ids=["ok", "broken"])
def test_python_dash_m_relay_check_is_the_entry_point(
    write_config: ConfigWriter, tmp_path: Path, yaml_text: str, code: int
) -> None:
    path = write_config(yaml_text, TEMPLATES)
    env = {"PATH": "/usr/bin:/bin", "SHOP_SECRET": "from-env"} if code == 0 else {"PATH": "/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "relay", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path.parent,
        timeout=30,
        check=False,
    )
    assert result.returncode == code
    if code == 0:
        assert result.stdout.startswith(f"{path}: OK: 1 sources, 2 targets, 2 routes, store ")
        assert result.stderr == ""
    else:
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"{path}: {len(BROKEN_PROBLEMS)} problem(s):",
            *(f"  {problem}" for problem in BROKEN_PROBLEMS),
        ]
