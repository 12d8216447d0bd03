"""Renders the host side's template files (box/templates; Packer's own template aside)."""

from __future__ import annotations

from pathlib import Path

import jinja2

TEMPLATES = Path(__file__).parent / "templates"


def render(template: str, /, **values: object) -> str:
    """Render one template of box/templates; a missing value is an error, not an empty string."""
    return render_from(TEMPLATES, template, **values)


def render_from(folder: Path, template: str, /, **values: object) -> str:
    """Render one template of `folder` (e.g. the lab's own templates) the same strict way."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(["ovf.j2"], default_for_string=False),
        keep_trailing_newline=True,
    )
    return env.get_template(template).render(**values)
