"""Render email templates in a Jinja2 sandbox: provider overrides first, then the shared set."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, pass_environment, select_autoescape
from jinja2 import TemplateError as JinjaError
from jinja2.filters import do_wordwrap
from jinja2.sandbox import SandboxedEnvironment

from worker.errors import TemplateError

PARTS = ("subject.txt", "txt", "html")


@dataclass(frozen=True, kw_only=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


class TemplateRenderer:
    """Renders `<name>.subject.txt`, `<name>.txt` and `<name>.html` for a provider.

    Customer-supplied values reach templates as plain data; the sandbox stops a template
    from calling into Python, and HTML output is autoescaped.

    A template is read from disk once and then kept: an edit reaches the running worker only
    through `adopt`, after the rules watcher has checked it, so a broken edit cannot fail the
    mail that needs it (and no file's modification time is read for each message).
    """

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self._environments: dict[str, SandboxedEnvironment] = {}

    def _environment(self, provider_id: str) -> SandboxedEnvironment:
        env = self._environments.get(provider_id)
        if env is None:
            search = [str(self.templates_dir / provider_id), str(self.templates_dir)]
            env = SandboxedEnvironment(
                loader=FileSystemLoader(search),
                undefined=StrictUndefined,
                autoescape=select_autoescape(enabled_extensions=("html",), default=False),
                keep_trailing_newline=True,
                auto_reload=False,
                cache_size=-1,
            )
            env.filters["wordwrap"] = _wordwrap
            self._environments[provider_id] = env
        return env

    def render(self, provider_id: str, name: str, context: dict[str, Any]) -> Rendered:
        env = self._environment(provider_id)
        parts: dict[str, str] = {}
        for part in PARTS:
            filename = f"{name}.{part}"
            try:
                parts[part] = env.get_template(filename).render(context)
            except JinjaError as exc:
                raise TemplateError(f"{filename} for {provider_id}: {exc}") from exc
        return Rendered(subject=" ".join(parts["subject.txt"].split()), text=parts["txt"],
                        html=parts["html"])

    def adopt(self, checked: TemplateRenderer) -> None:
        """Render from now on with the templates `checked` has loaded (and rendered once)."""
        self._environments = checked._environments

    def missing(self, provider_id: str, name: str) -> list[str]:
        """The template files `name` needs that cannot be found for this provider."""
        env = self._environment(provider_id)
        assert env.loader is not None
        missing = []
        for part in PARTS:
            try:
                env.loader.get_source(env, f"{name}.{part}")
            except JinjaError:
                missing.append(f"{name}.{part}")
        return missing


@pass_environment
def _wordwrap(environment: Environment, s: str, width: int = 79, break_long_words: bool = True,
              wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
    """Jinja's `wordwrap`, remembered: most paragraphs a letter wraps are the same in every
    letter (only a few hold a reference or a date), and textwrap took a third of rendering an
    acknowledgement."""
    return _wrapped(s, width, break_long_words, wrapstring or environment.newline_sequence,
                    break_on_hyphens)


@lru_cache(maxsize=1024)
def _wrapped(s: str, width: int, break_long_words: bool, wrapstring: str,
             break_on_hyphens: bool) -> str:
    # The environment only supplies the default line end, and `wrapstring` is always given.
    return str(do_wordwrap(_PLAIN, s, width, break_long_words, wrapstring, break_on_hyphens))


_PLAIN = Environment()
