"""What a reload would change, compared as values: sections by name, templates by their text,
and the settings that need a restart."""

from __future__ import annotations

from relay.config import Config
from relay.loading import load_config
from relay.reload import ConfigChange, Names, compare
from tests.conftest import ConfigWriter

RUNNING = """\
    store: "sqlite:///relay.db"
    sources:
      app: {path: /hooks/app}
      old: {path: /hooks/old}
      rotated: {path: /hooks/rotated, verify: {scheme: flipt, secret: first-secret}}
    targets:
      kept: {kind: console}
      edited: {kind: console, body: "{{ event.id }}"}
      dropped: {kind: console}
    routes:
      - targets: [kept, edited, dropped]
    """

NEW = """\
    store: "sqlite:///relay.db"
    sources:
      app: {path: /hooks/app}
      new: {path: /hooks/new}
      rotated: {path: /hooks/rotated, verify: {scheme: flipt, secret: second-secret}}
    targets:
      kept: {kind: console}
      edited: {kind: console, body: "{{ event.type }}"}
      added: {kind: console}
    routes:
      - targets: [kept, edited, added]
    retention: {delivered: 1d}
    """


def load(write_config: ConfigWriter, text: str, templates: dict[str, str] | None = None) -> Config:
    return load_config(write_config(text, templates))


def test_sections_are_compared_by_name_and_content(write_config: ConfigWriter) -> None:
    change = compare(load(write_config, RUNNING), load(write_config, NEW))
    assert change == ConfigChange(
        refused=(),
        sources=Names(added=("new",), removed=("old",), changed=("rotated",), unchanged=("app",)),
        targets=Names(
            added=("added",), removed=("dropped",), changed=("edited",), unchanged=("kept",)
        ),
        routes_changed=True,
        retention_changed=True,
    )
    assert change.summary() == (
        "sources: added new; removed old; changed rotated; 1 unchanged."
        " targets: added added; removed dropped; changed edited; 1 unchanged."
        " routes changed. retention changed"
    )


def test_the_same_file_read_again_changes_nothing(write_config: ConfigWriter) -> None:
    change = compare(load(write_config, RUNNING), load(write_config, RUNNING))
    assert change.refused == ()
    assert change.targets == Names(unchanged=("kept", "edited", "dropped"))
    assert change.sources == Names(unchanged=("app", "old", "rotated"))
    assert change.summary() == "nothing changed"


def test_a_target_whose_template_file_text_changed_is_changed(write_config: ConfigWriter) -> None:
    text = """\
        store: "sqlite:///relay.db"
        targets:
          out: {kind: console, template: out.j2}
          other: {kind: console, template: other.j2}
        """
    running = load(write_config, text, {"out.j2": "{{ event.id }}", "other.j2": "{{ event.id }}"})
    new = load(write_config, text, {"out.j2": "{{ event.type }}"})  # other.j2 as it was
    assert compare(running, new).targets == Names(changed=("out",), unchanged=("other",))


def test_listen_store_and_limits_need_a_restart(write_config: ConfigWriter) -> None:
    running = load(write_config, 'listen: "127.0.0.1:8080"\nstore: "sqlite:///relay.db"\n')
    new = load(
        write_config,
        'listen: "127.0.0.1:9090"\nstore: "sqlite:///other.db"\n'
        "limits: {max_body_bytes: 2048, read_timeout: 30s}\n",
    )
    assert compare(running, new).refused == (
        'listen: changed from "127.0.0.1:8080" to "127.0.0.1:9090": relay cannot move to another'
        " address while it runs; restart relay to apply it; the running config stays",
        "store: changed: relay cannot switch stores while it runs; restart relay to apply it;"
        " the running config stays",
        "limits.max_body_bytes: changed from 1048576 to 2048: limits are set in the HTTP server"
        " when relay starts; restart relay to apply it; the running config stays",
        "limits.read_timeout: changed from 15s to 30s: limits are set in the HTTP server when"
        " relay starts; restart relay to apply it; the running config stays",
    )


def test_the_admin_listener_needs_a_restart_to_move_but_its_token_changes_live(
    write_config: ConfigWriter,
) -> None:
    old_token, new_token = "old-token-0123456789", "new-token-0123456789"
    running = load(write_config, f'admin: {{listen: "127.0.0.1:9090", token: {old_token}}}\n')
    rotated = load(write_config, f'admin: {{listen: "127.0.0.1:9090", token: {new_token}}}\n')
    change = compare(running, rotated)
    assert change.refused == ()
    assert change.admin_token_changed
    assert change.summary() == "admin.token changed"
    moved = load(write_config, f'admin: {{listen: "127.0.0.1:9191", token: {old_token}}}\n')
    assert compare(running, moved).refused == (
        'admin.listen: changed from "127.0.0.1:9090" to "127.0.0.1:9191": relay cannot move its'
        " admin listener while it runs; restart relay to apply it; the running config stays",
    )
    assert not compare(running, moved).admin_token_changed
