"""The jinja2 environment for file skeletons, wherever the package is installed."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2


def template_dir() -> Path:
    """Installed: `verifier/templates` inside the package; in a source checkout (or an editable
    install): the top-level `templates/`."""
    from importlib import resources

    installed = Path(str(resources.files("verifier") / "templates"))
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[2] / "templates"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        autoescape=False,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(name: str, **context) -> str:
    return environment().get_template(name).render(**context)
