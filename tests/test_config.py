"""Config contract: every problem is found, named by its YAML path, and says what to fix."""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pytest

from relay.compiled import compile_config
from relay.durations import format_duration, parse_duration
from relay.envsubst import BadReference, MissingVariable, expand
from relay.errors import ConfigError
from relay.loading import load_config
from relay.shared_config import StandardWebhooksSignConfig
from relay.sources.hmac import HmacVerifyConfig
from relay.targets.console import ConsoleTargetConfig
from relay.targets.http import HttpTargetConfig
from tests.conftest import ConfigWriter

WHSEC = "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="  # base64 of "secret-key-for-tests"

VALID = f"""\
store: "sqlite:///var/relay.db"
sources:
  shop:
    path: /hooks/shop
    verify: {{scheme: hmac-sha256, secret: verify-s3cret, header: X-Signature, encoding: base64,
              prefix: "sha256="}}
targets:
  audit:
    kind: http
    url: "https://audit.example.com/events/{{{{ event.type | lower }}}}?src={{{{ event.source }}}}"
    method: put
    headers: {{X-Tenant: "{{{{ event.source }}}}"}}
    template: envelope.j2
    timeout: 1500ms
    concurrency: 8
    sign: {{scheme: standard-webhooks, secret: "{WHSEC}"}}
    retry: {{initial: 1s, multiplier: 3, max_interval: 5m, max_elapsed: 3d, max_attempts: 10}}
  screen:
    kind: console
    body: "{{{{ event.type }}}}"
routes:
  - sources: [shop]
    types: ["order.*"]
    when: "event.payload.amount > 100"
    targets: [audit, screen]
"""
ENVELOPE = '{"id": {{ event.id | json }}}\n'


def problems_of(
    write_config: ConfigWriter,
    yaml_text: str,
    environ: Mapping[str, str] | None = None,
    templates: dict[str, str] | None = None,
) -> list[str]:
    path = write_config(yaml_text, templates)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ or {})
    return caught.value.problems


# -- a valid config ------------------------------------------------------------------------


async def test_valid_config_loads_with_every_field_and_compiles(
    write_config: ConfigWriter, tmp_path: Path
) -> None:
    config = load_config(write_config(VALID, {"envelope.j2": ENVELOPE}), {})
    audit = config.targets["audit"]
    assert isinstance(audit, HttpTargetConfig)
    assert audit.method == "PUT"
    assert audit.timeout == timedelta(milliseconds=1500)
    assert audit.retry.max_elapsed == timedelta(days=3)
    assert audit.retry.max_attempts == 10
    assert isinstance(audit.sign, StandardWebhooksSignConfig)
    assert isinstance(config.sources["shop"].verify, HmacVerifyConfig)
    assert config.sources["shop"].verify.encoding == "base64"
    compiled = compile_config(config)
    assert compiled.summary() == (
        f"1 sources, 2 targets, 1 routes, store sqlite:///{tmp_path / 'var' / 'relay.db'}"
    )
    assert compiled.warnings == ()


def test_empty_file_is_a_config_of_defaults(write_config: ConfigWriter, tmp_path: Path) -> None:
    config = load_config(write_config(""), {})
    assert config.listen == "127.0.0.1:8080"
    assert config.limits.max_body_bytes == 1_048_576
    assert config.sources == {}
    assert config.targets == {}
    assert config.store == f"sqlite:///{tmp_path / 'var' / 'relay.db'}"


@pytest.mark.parametrize(
    "admin",
    [
        "{}",
        '{listen: "127.0.0.1:9191"}',
        '{listen: "127.8.9.10:9191"}',
        '{listen: "[::1]:9191"}',
        '{listen: "localhost:9191"}',
        '{listen: "0.0.0.0:9191", token: "${RELAY_ADMIN_TOKEN}"}',
    ],
)
def test_the_admin_listener_needs_a_token_only_off_loopback(
    write_config: ConfigWriter, admin: str
) -> None:
    token = "0123456789abcdef0123456789abcdef"
    config = load_config(write_config(f"admin: {admin}\n"), {"RELAY_ADMIN_TOKEN": token})
    assert config.admin.listen == (admin.split('"')[1] if '"' in admin else "127.0.0.1:9090")
    expected = token if "token" in admin else None
    shown = config.admin.token.get_secret_value() if config.admin.token is not None else None
    assert shown == expected


# -- every kind of error, with its exact text ---------------------------------------------

CASES: list[tuple[str, str, list[str]]] = [
    (
        "unknown top-level key, with a suggestion",
        "target: {}\n",
        ['target: unknown key (did you mean "targets"?)'],
    ),
    (
        "unknown nested key lists the valid keys",
        "limits: {max_body_bytes: 10, max_headers: 5}\n",
        [
            "limits.max_headers: unknown key; valid keys here: max_body_bytes, read_timeout, "
            "idle_timeout, max_connections"
        ],
    ),
    (
        "unknown key in retry, with a suggestion",
        "targets: {t: {kind: console, retry: {max_elasped: 1h}}}\n",
        ['targets.t.retry.max_elasped: unknown key (did you mean "max_elapsed"?)'],
    ),
    (
        "console target refuses http keys",
        "targets: {t: {kind: console, url: 'http://x/'}}\n",
        ["targets.t.url: unknown key; valid keys here: ordering, body, template, kind, retry"],
    ),
    (
        "listen without a port",
        'listen: "8080"\n',
        ['listen: listen must be "HOST:PORT", got "8080"'],
    ),
    (
        "listen with a port out of range",
        'listen: "127.0.0.1:70000"\n',
        ['listen: listen must be "HOST:PORT", got "127.0.0.1:70000"'],
    ),
    (
        "admin listener open to the network without a token",
        'admin: {listen: "0.0.0.0:9090"}\n',
        [
            'admin.token: admin.listen "0.0.0.0:9090" is reachable from other machines: set a'
            " token (token: ${RELAY_ADMIN_TOKEN}) or listen on a loopback address (127.0.0.1)"
        ],
    ),
    (
        "admin token too short to resist guessing (its value is not quoted)",
        'admin: {listen: "10.1.2.3:9090", token: "shortsecret"}\n',
        [
            "admin.token: must be at least 16 characters (e.g. the output of"
            " `openssl rand -hex 32`), got 11"
        ],
    ),
    (
        "admin token that Bearer cannot carry",
        'admin: {token: "long enough but with spaces"}\n',
        [
            "admin.token: must be letters, digits and - . _ ~ + / (then = at the end),"
            ' as "Bearer" takes it'
        ],
    ),
    (
        "admin listen without a port",
        'admin: {listen: "127.0.0.1"}\n',
        ['admin.listen: listen must be "HOST:PORT", got "127.0.0.1"'],
    ),
    (
        "store that is not a URL",
        "store: var/relay.db\n",
        ['store: store must be a URL such as sqlite:///var/relay.db, got "var/relay.db"'],
    ),
    (
        "store of an unsupported kind",
        'store: "mysql://db/relay"\n',
        [
            'store: unsupported store "mysql://...": use sqlite:///PATH'
            " or postgresql://USER@HOST:PORT/DATABASE"
        ],
    ),
    (
        "sqlite store without a file",
        'store: "sqlite:///"\n',
        ["store: sqlite:/// needs a file path, e.g. sqlite:///var/relay.db"],
    ),
    (
        "sqlite store options are checked at load, all of them",
        'store: "sqlite:///r.db?synchronous=fast&busy_timeout=5q&cache=1"\n',
        [
            'store: synchronous must be normal or full, got "fast"; busy_timeout: invalid '
            'duration "5q" (use e.g. 500ms, 15s, 5m, 24h, 3d); unknown option "cache" '
            "(use synchronous or busy_timeout)"
        ],
    ),
    (
        "limits below the minimum",
        "limits: {max_body_bytes: 0}\n",
        ["limits.max_body_bytes: must be greater than or equal to 1, got 0"],
    ),
    (
        "a number that is not a number",
        "limits: {max_body_bytes: lots}\n",
        ["limits.max_body_bytes: must be a whole number, got a string"],
    ),
    (
        "sections of the wrong shape",
        "sources: []\ntargets: 5\nroutes: {}\n",
        [
            "sources: must be a mapping, got a list",
            "targets: must be a mapping, got an integer",
            "routes: must be a list, got a mapping",
        ],
    ),
    (
        "an empty entry",
        "sources:\n  shop:\n",
        ["sources.shop: must be a mapping, got null"],
    ),
    (
        "source path not absolute",
        "sources: {s: {path: hooks/s}}\n",
        ['sources.s.path: path must start with "/", got "hooks/s"'],
    ),
    (
        "source path with a route pattern",
        "sources: {s: {path: '/hooks/{id}'}}\n",
        ['sources.s.path: path "/hooks/{id}" must not contain spaces, "?", "#", "{" or "}"'],
    ),
    (
        "source path reserved",
        "sources: {s: {path: /metrics}}\n",
        ['sources.s.path: "/metrics" is reserved by relay'],
    ),
    (
        "two sources on one path",
        "sources: {a: {path: /in}, b: {path: /in}}\n",
        ['sources.b.path: "/in" is also used by source a'],
    ),
    (
        "verify with a wrong scheme",
        "sources: {s: {path: /s, verify: {scheme: sha1, secret: x, encoding: b32}}}\n",
        [
            'sources.s.verify.scheme: unknown scheme "sha1"; expected one of: hmac-sha256,'
            " flagright, flagsmith, flipt, standard-webhooks",
        ],
    ),
    (
        "hmac verify with a wrong encoding and without a header",
        "sources: {s: {path: /s, verify: {scheme: hmac-sha256, secret: x, encoding: b32}}}\n",
        [
            "sources.s.verify.header: missing required key",
            'sources.s.verify.encoding: unknown encoding "b32"; expected one of: hex, base64',
        ],
    ),
    (
        "sender verify schemes with bad secrets and tolerance",
        "sources:\n"
        "  a: {path: /a, verify: {scheme: flagright, secret: [ok, '']}}\n"
        "  b: {path: /b, verify: {scheme: flipt, secret: []}}\n"
        "  c: {path: /c, verify: {scheme: standard-webhooks,"
        " secret: [whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, nope],"
        " tolerance: 5}}\n"
        "  d: {path: /d, verify: {scheme: flagsmith, secret: x, header: X-Sig}}\n",
        [
            "sources.a.verify.secret[1]: must not be empty",
            "sources.b.verify.secret: List should have at least 1 item after validation, not 0",
            "sources.c.verify.secret[1]: must start with whsec_ (Standard Webhooks secret)",
            "sources.c.verify.tolerance: invalid duration 5: add a unit (use e.g. 500ms, 15s, 5m,"
            " 24h, 3d)",
            "sources.d.verify.header: unknown key; valid keys here: scheme, secret",
        ],
    ),
    (
        "allowlists with a bad entry, and a sender that contradicts verify",
        "sources:\n"
        "  a: {path: /a, allow_ips: [10.0.0.0/8, flagright-prod], trusted_proxies: [nope]}\n"
        "  b: {path: /b, sender: flipt, verify: {scheme: flagright, secret: x}}\n",
        [
            'sources.a.allow_ips: "flagright-prod" is neither an address, a CIDR nor a preset'
            " (flagright-production, flagright-sandbox)",
            'sources.a.trusted_proxies: "nope" is neither an address, a CIDR nor a preset'
            " (flagright-production, flagright-sandbox)",
            "sources.b: sender flipt does not match verify.scheme flagright",
        ],
    ),
    (
        "verify with an empty secret and a bad header name",
        "sources: {s: {path: /s, verify: {scheme: hmac-sha256, secret: '', header: X Sig}}}\n",
        [
            "sources.s.verify.secret: must not be empty",
            'sources.s.verify.header: invalid header name "X Sig": use letters, digits and "-"',
        ],
    ),
    (
        "target without a kind",
        "targets: {t: {url: 'http://x/'}}\n",
        ["targets.t.kind: missing required key; expected one of: http, slack, warehouse, console"],
    ),
    (
        "target of an unknown kind",
        "targets: {t: {kind: smtp}}\n",
        ['targets.t.kind: unknown kind "smtp"; expected one of: http, slack, warehouse, console'],
    ),
    (
        "http target without a url",
        "targets: {t: {kind: http}}\n",
        ["targets.t.url: missing required key"],
    ),
    (
        "template in the host",
        "targets: {t: {kind: http, url: 'https://{{ event.source }}.example.com/in'}}\n",
        [
            "targets.t.url: only the path and query may contain template expressions, "
            "not scheme or host"
        ],
    ),
    (
        "template in the scheme",
        "targets: {t: {kind: http, url: '{{ scheme }}://example.com/in'}}\n",
        [
            "targets.t.url: only the path and query may contain template expressions, "
            "not scheme or host"
        ],
    ),
    (
        "url of another scheme",
        "targets: {t: {kind: http, url: 'ftp://example.com/in'}}\n",
        ['targets.t.url: url must be http(s)://HOST/..., got "ftp://example.com/..."'],
    ),
    (
        "url without a scheme",
        "targets: {t: {kind: http, url: 'example.com/in'}}\n",
        ['targets.t.url: url must be http(s)://HOST/..., got "example.com/..."'],
    ),
    (
        "url with a bad port",
        "targets: {t: {kind: http, url: 'http://example.com:http/in'}}\n",
        ['targets.t.url: invalid port in "http://example.com:http/..."'],
    ),
    (
        "method that is not a word",
        "targets: {t: {kind: http, url: 'http://x/', method: 'GET /'}}\n",
        ['targets.t.method: invalid HTTP method "GET /"'],
    ),
    (
        "header name and value",
        "targets: {t: {kind: http, url: 'http://x/', headers: {'X Y': a, X-Count: 5}}}\n",
        [
            'targets.t.headers.X Y: invalid header name "X Y": use letters, digits and "-"',
            "targets.t.headers.X-Count: must be a string, got an integer",
        ],
    ),
    (
        "concurrency out of range",
        "targets: {t: {kind: http, url: 'http://x/', concurrency: 5000}}\n",
        ["targets.t.concurrency: must be less than or equal to 1024, got 5000"],
    ),
    (
        "body and template together",
        "targets: {t: {kind: console, body: x, template: y.j2}}\n",
        ["targets.t.template: set body or template, not both"],
    ),
    (
        "sign of an unknown scheme",
        "targets: {t: {kind: http, url: 'http://x/', sign: {scheme: md5, secret: x}}}\n",
        [
            'targets.t.sign.scheme: unknown scheme "md5"; expected one of: '
            "hmac-sha256, standard-webhooks"
        ],
    ),
    (
        "sign without a scheme",
        "targets: {t: {kind: http, url: 'http://x/', sign: {secret: x}}}\n",
        [
            "targets.t.sign.scheme: missing required key; expected one of: "
            "hmac-sha256, standard-webhooks"
        ],
    ),
    (
        "standard-webhooks secret without whsec_",
        "targets: {t: {kind: http, url: 'http://x/', sign: {scheme: standard-webhooks, "
        "secret: abc}}}\n",
        ["targets.t.sign.secret: must start with whsec_ (Standard Webhooks secret)"],
    ),
    (
        "standard-webhooks secret that is not base64",
        "targets: {t: {kind: http, url: 'http://x/', sign: {scheme: standard-webhooks, "
        "secret: 'whsec_!!'}}}\n",
        ["targets.t.sign.secret: must be whsec_ followed by base64"],
    ),
    (
        "hmac sign with an unknown key",
        "targets: {t: {kind: http, url: 'http://x/', sign: {scheme: hmac-sha256, secret: x, "
        "encoding: hex}}}\n",
        ["targets.t.sign.encoding: unknown key; valid keys here: scheme, secret, header"],
    ),
    (
        "retry multiplier and attempts below their minimum",
        "targets: {t: {kind: console, retry: {multiplier: 0.5, max_attempts: 0}}}\n",
        [
            "targets.t.retry.multiplier: must be greater than or equal to 1, got 0.5",
            "targets.t.retry.max_attempts: must be greater than or equal to 1, got 0",
        ],
    ),
    (
        "route to unknown names",
        "sources: {shop: {path: /s}}\ntargets: {audit: {kind: console}}\n"
        "routes: [{sources: [shop, stripe], targets: [audit, audti, billing]}]\n",
        [
            'routes[0].sources[1]: no source named "stripe"; sources are: shop',
            'routes[0].targets[1]: no target named "audti" (did you mean "audit"?)',
            'routes[0].targets[2]: no target named "billing"; targets are: audit',
        ],
    ),
    (
        "route to a target when none are defined",
        "routes: [{targets: [audit]}]\n",
        ['routes[0].targets[0]: no target named "audit"; no targets are defined'],
    ),
    (
        "route without targets, and empty filters",
        "targets: {t: {kind: console}}\nroutes: [{sources: [], types: [], targets: []}]\n",
        [
            "routes[0].sources: must not be empty (leave it out to match every source)",
            "routes[0].types: must not be empty (leave it out to match every type)",
            "routes[0].targets: must name at least one target",
        ],
    ),
    (
        "route missing its targets",
        "routes: [{types: ['*']}]\n",
        ["routes[0].targets: missing required key"],
    ),
    (
        "a name that is not a string",
        "targets: {1: {kind: console}}\n",
        ["targets.1: name must be a string, got an integer; quote it"],
    ),
    (
        "two batches at once into one DuckDB file",
        "targets: {wh: {kind: warehouse, url: 'duckdb:///w.duckdb', table: t, key: [id],"
        " concurrency: 2, columns: {id: {value: event.id}}}}\n",
        ["targets.wh.concurrency: DuckDB writes one batch at a time: leave it out or set 1"],
    ),
]


@pytest.mark.parametrize(
    ("yaml_text", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_config_error_names_the_path_and_the_fix(
    write_config: ConfigWriter, yaml_text: str, expected: list[str]
) -> None:
    assert problems_of(write_config, yaml_text) == expected


def test_several_errors_in_every_part_are_reported_together(write_config: ConfigWriter) -> None:
    yaml_text = """\
        listen: "localhost"
        store: "sqlite:///var/relay.db"
        colour: blue
        sources:
          shop: {path: /hooks/shop, verify: {scheme: hmac-sha256, secret: "${SHOP_SECRET}",
                 header: X-Sig}}
        targets:
          audit:
            kind: http
            url: "https://audit.example.com/{{ event.type"
            template: missing.j2
            retry: {max_elapsed: 15x}
          screen:
            kind: console
            body: "{{ event.id }"
        routes:
          - sources: [shop]
            when: "event.type =="
            targets: [audit, billing]
    """
    assert problems_of(write_config, yaml_text) == [
        "sources.shop.verify.secret: environment variable SHOP_SECRET is not set "
        "(and has no :-default)",
        'listen: listen must be "HOST:PORT", got "localhost"',
        'targets.audit.template: "missing.j2" not found in templates/',
        "targets.audit.url: line 1: unexpected end of template, expected 'end of print statement'.",
        'targets.audit.retry.max_elapsed: invalid duration "15x" '
        "(use e.g. 500ms, 15s, 5m, 24h, 3d)",
        "targets.screen.body: line 1: unexpected '}'",
        "routes[0].when: invalid expression: unexpected 'end of template'",
        "colour: unknown key; valid keys here: listen, admin, store, retention, limits,"
        " templates_dir, sources, targets, routes",
        'routes[0].targets[1]: no target named "billing"; targets are: audit, screen',
    ]


# -- templates and `when`: compiled by validation, before anything is opened ------------

TEMPLATE_CASES: list[tuple[str, str, dict[str, str], str]] = [
    (
        "template file not found",
        "targets: {t: {kind: console, template: x.j2}}\n",
        {},
        'targets.t.template: "x.j2" not found in templates/',
    ),
    (
        "template file syntax error names the line",
        "targets: {t: {kind: console, template: bad.j2}}\n",
        {"bad.j2": '{\n  "id": {{ event.id | json }},\n  "x": {% if %}\n}\n'},
        'targets.t.template: "bad.j2" line 3: Expected an expression, got \'end of statement '
        "block'",
    ),
    (
        "inline body syntax error names the line",
        'targets: {t: {kind: console, body: "one\\n{{ event.id }\\n"}}\n',
        {},
        "targets.t.body: line 2: unexpected '}'",
    ),
    (
        "url path template error",
        "targets: {t: {kind: http, url: 'http://x/{{ event.type '}}\n",
        {},
        "targets.t.url: line 1: unexpected end of template, expected 'end of print statement'.",
    ),
    (
        "header template error",
        "targets: {t: {kind: http, url: 'http://x/', headers: {X-A: '{% if %}'}}}\n",
        {},
        "targets.t.headers.X-A: line 1: Expected an expression, got 'end of statement block'",
    ),
    (
        "when that does not compile",
        "targets: {t: {kind: console}}\nroutes: [{targets: [t], when: 'event.type == '}]\n",
        {},
        "routes[0].when: invalid expression: unexpected 'end of template'",
    ),
]


@pytest.mark.parametrize(
    ("yaml_text", "templates", "expected"),
    [case[1:] for case in TEMPLATE_CASES],
    ids=[case[0] for case in TEMPLATE_CASES],
)
def test_template_errors_are_validation_errors_alone_and_beside_other_errors(
    write_config: ConfigWriter, yaml_text: str, templates: dict[str, str], expected: str
) -> None:
    assert problems_of(write_config, yaml_text, templates=templates) == [expected]
    # Beside a schema error the same compile runs (it is validation), so one run lists both.
    broken = yaml_text + "bogus: 1\n"
    assert problems_of(write_config, broken, templates=templates) == [
        expected,
        "bogus: unknown key; valid keys here: listen, admin, store, retention, limits,"
        " templates_dir, sources, targets, routes",
    ]


async def test_template_is_looked_up_in_templates_dir_relative_to_the_config(
    write_config: ConfigWriter, tmp_path: Path
) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "x.j2").write_text("{{ event.id }}", encoding="utf-8")
    config = load_config(
        write_config("templates_dir: tpl\ntargets: {t: {kind: console, template: x.j2}}\n"), {}
    )
    assert config.templates_dir == str(tmp_path / "tpl")
    assert compile_config(config).targets.keys() == {"t"}


# -- discriminator tags never leak into paths ----------------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "targets: {x: {kind: http, url: 'http://h/', retry: {max_elapsed: 15x}}}\n",
            'targets.x.retry.max_elapsed: invalid duration "15x" (use e.g. 500ms, 15s, 5m, 24h, '
            "3d)",
        ),
        (
            "targets: {x: {kind: console, retry: {initial: soon}}}\n",
            'targets.x.retry.initial: invalid duration "soon" (use e.g. 500ms, 15s, 5m, 24h, 3d)',
        ),
        (
            "targets: {x: {kind: http, url: 'http://h/', "
            "sign: {scheme: hmac-sha256, secret: ''}}}\n",
            "targets.x.sign.secret: must not be empty",
        ),
        (
            "targets: {x: {kind: http, url: 'http://h/', sign: {scheme: standard-webhooks}}}\n",
            "targets.x.sign.secret: missing required key",
        ),
        # Names that look like fields or tags stay where they are.
        (
            "targets: {sign: {kind: http, url: 'http://h/', timeout: 0s}}\n",
            'targets.sign.timeout: invalid duration "0s": must be more than 0',
        ),
        (
            "targets: {http: {kind: console, bogus: 1}}\n",
            "targets.http.bogus: unknown key; valid keys here: ordering, body, template, kind,"
            " retry",
        ),
        (
            "sources: {verify: {path: /v, bogus: 1}}\n",
            "sources.verify.bogus: unknown key; valid keys here: path, verify, sender, allow_ips,"
            " trusted_proxies",
        ),
        (
            "sources: {s: {path: /v, verify: {scheme: hmac-sha256, secret: x, header: X, "
            "encoding: hex, prefx: a}}}\n",
            'sources.s.verify.prefx: unknown key (did you mean "prefix"?)',
        ),
    ],
)
def test_paths_are_yaml_paths_without_discriminator_tags(
    write_config: ConfigWriter, yaml_text: str, expected: str
) -> None:
    assert problems_of(write_config, yaml_text) == [expected]


# -- environment expansion -----------------------------------------------------------------

ENV_CONFIG = """\
listen: "${HOST:-127.0.0.1}:${PORT}"
limits: {max_body_bytes: "${MAX_BODY:-2048}"}
sources:
  shop: {path: "/hooks/${SHOP_PATH:-shop}"}
targets:
  t:
    kind: http
    url: "https://example.com/in"
    headers: {Authorization: "Bearer ${TOKEN}", X-Cost: "$$5 for $${HOME}"}
routes: [{targets: ["${TARGET:-t}"]}]
"""


def test_env_variables_are_expanded_with_defaults_and_escapes(write_config: ConfigWriter) -> None:
    config = load_config(write_config(ENV_CONFIG), {"PORT": "9000", "TOKEN": "tok-${PORT}"})
    assert config.listen == "127.0.0.1:9000"
    assert config.limits.max_body_bytes == 2048  # a string from the environment, then an int
    assert config.sources["shop"].path == "/hooks/shop"
    target = config.targets["t"]
    assert isinstance(target, HttpTargetConfig)
    # A value from the environment is not expanded again; `$$` is a literal `$`.
    assert {name: value.source for name, value in target.headers.items()} == {
        "Authorization": "Bearer tok-${PORT}",
        "X-Cost": "$5 for ${HOME}",
    }
    assert config.routes[0].targets == ["t"]


def test_set_variables_override_defaults(write_config: ConfigWriter) -> None:
    environ = {"HOST": "0.0.0.0", "PORT": "1", "TOKEN": "t", "SHOP_PATH": "s", "MAX_BODY": "7"}
    config = load_config(write_config(ENV_CONFIG), environ)
    assert config.listen == "0.0.0.0:1"
    assert config.limits.max_body_bytes == 7
    assert config.sources["shop"].path == "/hooks/s"


def test_empty_variable_takes_the_default_as_in_the_shell(write_config: ConfigWriter) -> None:
    config = load_config(write_config(ENV_CONFIG), {"HOST": "", "PORT": "1", "TOKEN": ""})
    assert config.listen == "127.0.0.1:1"
    target = config.targets["t"]
    assert isinstance(target, HttpTargetConfig)
    assert target.headers["Authorization"].source == "Bearer "  # set but empty, no default: empty


def test_missing_variables_are_named_with_their_paths_once(write_config: ConfigWriter) -> None:
    yaml_text = ENV_CONFIG.replace("${TARGET:-t}", "${TARGET}")
    assert problems_of(write_config, yaml_text) == [
        "listen: environment variable PORT is not set (and has no :-default)",
        "targets.t.headers.Authorization: environment variable TOKEN is not set "
        "(and has no :-default)",
        "routes[0].targets[0]: environment variable TARGET is not set (and has no :-default)",
    ]


def test_several_missing_variables_in_one_value_are_all_named(write_config: ConfigWriter) -> None:
    assert problems_of(write_config, 'listen: "${HOST}:${PORT}"\n') == [
        "listen: environment variables HOST and PORT are not set (and have no :-default)"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "${1ST}",
            'invalid reference "${1ST": write ${NAME} or ${NAME:-default}, and $$ for a literal $',
        ),
        (
            "${TOKEN",
            'invalid reference "${TOKEN": write ${NAME} or ${NAME:-default}, and $$ for a '
            "literal $",
        ),
        (
            "${A-x}",
            'invalid reference "${A": write ${NAME} or ${NAME:-default}, and $$ for a literal $',
        ),
        ("${A:-${B}}", 'invalid reference "${A": a default cannot contain ${...}'),
    ],
)
def test_malformed_reference_is_an_error_not_text(
    write_config: ConfigWriter, value: str, expected: str
) -> None:
    yaml_text = f"targets: {{t: {{kind: console, body: '{value}'}}}}\n"
    assert problems_of(write_config, yaml_text) == [f"targets.t.body: {expected}"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain $HOME and a $ sign", "plain $HOME and a $ sign"),
        ("${A}", "a"),
        ("${A:-d}", "a"),
        ("${UNSET:-d}", "d"),
        ("${UNSET:-}", ""),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY}", ""),
        ("$${A}", "${A}"),
        ("$$$$", "$$"),
        ("${A}${A}", "aa"),
        ("${REF}", "${A}"),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand(text, {"A": "a", "EMPTY": "", "REF": "${A}"}) == expected


def test_expand_errors_are_value_errors_naming_every_missing_variable() -> None:
    with pytest.raises(MissingVariable) as caught:
        expand("${X}/${Y}/${X}", {})
    assert caught.value.names == ["X", "Y"]
    with pytest.raises(BadReference):
        expand("${", {})


def test_env_defaults_to_the_process_environment(
    write_config: ConfigWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_TEST_PORT", "9123")
    config = load_config(write_config('listen: "127.0.0.1:${RELAY_TEST_PORT}"\n'))
    assert config.listen == "127.0.0.1:9123"


# -- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("500ms", timedelta(milliseconds=500)),
        ("1.5ms", timedelta(microseconds=1500)),
        ("15s", timedelta(seconds=15)),
        ("0.5s", timedelta(milliseconds=500)),
        ("5m", timedelta(minutes=5)),
        ("24h", timedelta(hours=24)),
        ("3d", timedelta(days=3)),
        (" 15 s ", timedelta(seconds=15)),
        ("0s", timedelta(0)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["15", "15x", "15S", "s", "", "-5s", "1e3s", "1h30m", "15 seconds", "\u0661\u0665s"]
)
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid duration ") as caught:
        parse_duration(text)
    assert str(caught.value) == f'invalid duration "{text}" (use e.g. 500ms, 15s, 5m, 24h, 3d)'


def test_parse_duration_too_long_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r'^invalid duration "99999999999d": too long$'):
        parse_duration("99999999999d")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("15", 'invalid duration "15" (use e.g. 500ms, 15s, 5m, 24h, 3d)'),
        ("0ms", 'invalid duration "0ms": must be more than 0'),
        ("99999999999d", 'invalid duration "99999999999d": too long'),
        (15, "invalid duration 15: add a unit (use e.g. 500ms, 15s, 5m, 24h, 3d)"),
        (1.5, "invalid duration 1.5: add a unit (use e.g. 500ms, 15s, 5m, 24h, 3d)"),
        (True, "must be a duration such as 15s, got true"),
        (None, "must be a duration such as 15s, got null"),
        (["15s"], "must be a duration such as 15s, got a list"),
    ],
)
def test_duration_fields_refuse_non_durations(
    write_config: ConfigWriter, value: object, expected: str
) -> None:
    yaml_text = f"targets: {{t: {{kind: http, url: 'http://h/', timeout: {json.dumps(value)}}}}}\n"
    assert problems_of(write_config, yaml_text) == [f"targets.t.timeout: {expected}"]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=3), "3d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=5), "5m"),
        (timedelta(seconds=90), "90s"),
        (timedelta(milliseconds=1500), "1500ms"),
    ],
)
def test_format_duration_is_the_shortest_exact_spelling(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(text) == value


# -- paths relative to the config file ------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ("sqlite:///var/relay.db", "sqlite:///{base}/var/relay.db"),
        ("sqlite:///../up.db?synchronous=full", "sqlite:///{parent}/up.db?synchronous=full"),
        ("sqlite:////srv/relay.db", "sqlite:////srv/relay.db"),
    ],
)
def test_store_path_is_relative_to_the_config_file_not_the_cwd(
    write_config: ConfigWriter,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store: str,
    expected: str,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(write_config(f'store: "{store}"\n'), {})
    assert config.store == expected.format(base=tmp_path, parent=tmp_path.parent)


def test_templates_dir_is_relative_to_the_config_file(
    write_config: ConfigWriter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path.parent)
    assert load_config(write_config(""), {}).templates_dir == str(tmp_path / "templates")
    assert load_config(write_config("templates_dir: ../t\n"), {}).templates_dir == str(
        tmp_path.parent / "t"
    )
    assert load_config(write_config("templates_dir: /opt/t\n"), {}).templates_dir == "/opt/t"


# -- the file itself -------------------------------------------------------------------------


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml", {})
    assert caught.value.problems == [
        f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"
    ]


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_bytes(b"listen: \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.problems == [f"{path}: cannot read: not UTF-8 text (byte 8)"]


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "targets: [\n",
            "invalid YAML at line 2, column 1: expected the node content, but found '<stream end>'",
        ),
        (
            'listen: "127.0.0.1\nstore: x\n',
            "invalid YAML at line 3, column 1: found unexpected end of stream "
            "(while scanning a quoted scalar at line 1)",
        ),
        (
            "targets:\n  a: {kind: console}\n  a: {kind: http}\n",
            'invalid YAML at line 3, column 3: duplicate key "a" (first at line 2)',
        ),
        ("- listen\n", "the top level must be a mapping, got a list"),
    ],
)
def test_invalid_yaml_is_one_line_with_its_position(
    write_config: ConfigWriter, yaml_text: str, expected: str
) -> None:
    path = write_config(yaml_text)
    assert problems_of(write_config, yaml_text) == [f"{path}: {expected}"]


def test_yaml_merge_keys_may_be_overridden(write_config: ConfigWriter) -> None:
    yaml_text = """\
        targets:
          a: &base {kind: console, body: "a"}
          b:
            <<: *base
            body: "b"
    """
    config = load_config(write_config(yaml_text), {})
    merged = config.targets["b"]
    assert isinstance(merged, ConsoleTargetConfig)
    assert merged.body is not None
    assert merged.body.source == "b"


# -- secrets -------------------------------------------------------------------------------

SECRETS = ("verify-s3cret", "hmac-s3cret", "c2VjcmV0LWtleS1mb3ItdGVzdHM", "db-passw0rd", "T0KEN")


def test_secrets_are_hidden_in_repr_and_str(write_config: ConfigWriter) -> None:
    yaml_text = VALID.replace(
        "screen:\n    kind: console",
        "screen:\n    kind: http\n    url: http://h/\n"
        "    sign: {scheme: hmac-sha256, secret: '${HMAC}'}",
    ).replace('    body: "{{ event.type }}"\n', "")
    config = load_config(
        write_config(yaml_text, {"envelope.j2": ENVELOPE}), {"HMAC": "hmac-s3cret"}
    )
    for text in (repr(config), str(config), repr(config.targets), str(config.model_dump())):
        for secret in SECRETS:
            assert secret not in text


def test_secrets_never_appear_in_problems_or_tracebacks(write_config: ConfigWriter) -> None:
    yaml_text = """\
        store: "postgresql://relay:db-passw0rd@db/relay?pool=9"
        sources:
          s: {path: s, verify: {scheme: hmac-sha256, secret: verify-s3cret, header: "X Y"}}
        targets:
          a:
            kind: http
            url: "hooks.example.com/T0KEN"
            headers: {Authorization: 5}
            sign: {scheme: standard-webhooks, secret: "c2VjcmV0LWtleS1mb3ItdGVzdHM="}
          b:
            kind: http
            url: "ftp://user:db-passw0rd@h/T0KEN"
            sign: {scheme: hmac-sha256, secret: "hmac-s3cret", extra: 1}
          c:
            kind: http
            url: "http://h/"
            sign: {scheme: standard-webhooks, secret: "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM==="}
    """
    path = write_config(yaml_text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.problems == [
        'store: unknown option "pool" (use sslmode, schema, application_name)',
        'sources.s.path: path must start with "/", got "s"',
        'sources.s.verify.header: invalid header name "X Y": use letters, digits and "-"',
        'targets.a.url: url must be http(s)://HOST/..., got "hooks.example.com/..."',
        "targets.a.headers.Authorization: must be a string, got an integer",
        "targets.a.sign.secret: must start with whsec_ (Standard Webhooks secret)",
        'targets.b.url: url must be http(s)://HOST/..., got "ftp://...@h/..."',
        "targets.b.sign.extra: unknown key; valid keys here: scheme, secret, header",
        "targets.c.sign.secret: must be whsec_ followed by base64",
    ]
    shown = "".join(traceback.format_exception(caught.value))
    for secret in SECRETS:
        assert secret not in shown


def test_secret_on_a_broken_yaml_line_is_not_quoted(write_config: ConfigWriter) -> None:
    yaml_text = "sources:\n  s: {path: /s, verify: {secret: hmac-s3cret: x}}\n"
    problems = problems_of(write_config, yaml_text)
    assert len(problems) == 1
    assert "invalid YAML at line 2" in problems[0]
    assert "hmac-s3cret" not in problems[0]


def test_config_is_frozen(write_config: ConfigWriter) -> None:
    config = load_config(write_config(""), {})
    with pytest.raises(ValueError, match="frozen"):
        config.listen = "0.0.0.0:1"  # type: ignore[misc]


def test_body_and_template_together_is_one_problem_even_beside_others(
    write_config: ConfigWriter,
) -> None:
    yaml_text = "targets: {t: {kind: console, body: a, template: b.j2, retry: {initial: x}}}\n"
    problems = problems_of(write_config, yaml_text, templates={"b.j2": "b"})
    assert problems == [
        "targets.t.template: set body or template, not both",
        'targets.t.retry.initial: invalid duration "x" (use e.g. 500ms, 15s, 5m, 24h, 3d)',
    ]
