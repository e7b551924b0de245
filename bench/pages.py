"""The HTML look of every page collapse-bench writes: one set of Jinja2 templates
(``bench/templates/``) and one stylesheet (``templates/style.css``), inlined into each page.

The leaderboard pages (:mod:`bench.render`), the suite page (:mod:`bench.suite`), the index page
(:mod:`bench.site`) and the run and track reports (:mod:`bench.report`) all render through
:func:`render`. Autoescape is on for every template, so a string from results or plugins (a
plugin named ``<script>``) is shown as text; Jinja2 is the one HTML escaper. Pages stay
self-contained: the stylesheet and the tables' sorting script are inlined, images are data URIs.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

TEMPLATES = "templates"
STYLESHEET = "style.css"
SORT_SCRIPT = "sort.js"  # click a table header to sort (leaderboard tables)


def asset(name: str) -> str:
    """The text of a file in ``bench/templates/`` (the stylesheet, the sorting script)."""
    return (resources.files("bench") / TEMPLATES / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The one Jinja2 environment: autoescape on, undefined names an error."""
    env = Environment(loader=PackageLoader("bench", TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals["stylesheet"] = Markup(asset(STYLESHEET))
    env.globals["sort_script"] = Markup(asset(SORT_SCRIPT))
    return env


def render(template: str, **context: Any) -> str:
    """Render ``bench/templates/<template>`` with ``context``."""
    return environment().get_template(template).render(**context)


def png_uri(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI for an ``img`` element."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def html_text(value: Any) -> str:
    """``value`` as HTML text, escaped exactly as the templates escape it (for checks and for
    callers that compare with a page)."""
    return str(escape(str(value)))
