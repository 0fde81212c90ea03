"""What the report shows of untrusted text is inert: an allowlist sanitiser for HTML and notebook outputs, and the
Content-Security-Policy every page carries (docs/security.md)."""

from __future__ import annotations

import copy
import html
import re

from clipeval.extras import require

# a report page may run no script and reach no network: nothing is allowed but its own inline styles and its
# images (figure files beside it, data: URLs in notebook pages); a second line of defence behind the sanitizing
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'none'; "
       "object-src 'none'; base-uri 'none'; form-action 'none'")
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
SAFE_TAGS = frozenset({
    "a", "abbr", "acronym", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "details",
    "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol",
    "p", "pre", "q", "s", "samp", "small", "span", "strong", "style", "sub", "summary", "sup", "table", "tbody",
    "td", "tfoot", "th", "thead", "tr", "u", "ul", "var"})
SAFE_PROTOCOLS = frozenset({"http", "https", "mailto", "data"})
# the output types a page shows (nbconvert renders each inert: text escaped, HTML and markdown through
# sanitize_html, images as data: URLs); others (javascript, widgets, mermaid...) are dropped
SAFE_OUTPUT_TYPES = frozenset({"text/plain", "text/html", "text/markdown", "text/latex", "image/png", "image/jpeg",
                               "image/svg+xml"})
# the CSS functions a <style> element may call (colours and variables: nothing that loads a resource)
SAFE_CSS_FUNCTIONS = frozenset({"rgb", "rgba", "hsl", "hsla", "var", "calc", "not", "is", "nth-child",
                                "nth-of-type", "nth-last-child"})


def _safe_attribute(tag: str, name: str, value: str) -> bool:
    if name == "style":
        return _safe_style(value)
    if name in {"class", "id", "title"}:
        return True
    if tag == "a":
        return (name == "href" and not value.strip().lower().startswith("data:")) or name == "rel"
    if tag == "img":
        return ((name == "src" and value.strip().lower().startswith("data:image/"))
                or name in {"alt", "width", "height"})
    if tag in {"td", "th"}:
        return name in {"colspan", "rowspan", "align", "scope"}
    if tag in {"col", "colgroup"}:
        return name == "span"
    return tag == "ol" and name == "start"


def _safe_style(style: str) -> bool:
    """A ``style`` attribute is kept only with no backslash escape and no function beyond
    :data:`SAFE_CSS_FUNCTIONS`: ``url(``, ``image-set(``... would load a resource (bleach keeps
    ``cursor: url(...)``, a property it allows)."""
    return "\\" not in style and {name.lower() for name in re.findall(r"([\w-]+)\s*\(", style)} <= SAFE_CSS_FUNCTIONS


def _safe_css(css: str) -> bool:
    """CSS of a ``<style>`` element is kept only when it can do no more than colour and lay out:
    no at-rules, quotes, backslash escapes or slashes, and no function beyond :data:`SAFE_CSS_FUNCTIONS`."""
    if not re.fullmatch(r"[\w\s#.,:;{}()%!*>+~=\[\]-]*", css):
        return False
    return {name.lower() for name in re.findall(r"([\w-]+)\s*\(", css)} <= SAFE_CSS_FUNCTIONS


def sanitize_html(fragment) -> str:
    """An HTML fragment with no script, event handler, remote resource or unknown tag left live.

    bleach parses it like a browser and keeps only :data:`SAFE_TAGS` with safe attributes and
    URL schemes (``style`` attributes are filtered to bleach's CSS property allowlist, and dropped
    whole when they call a function that could load a resource, ``url(`` above all); any other
    markup, ``<script>`` included, is escaped into visible text and comments are removed. A
    ``<style>`` element survives only when its CSS passes a strict check (colours, selectors).
    """
    bleach = require("bleach", "notebooks", "the report's notebook pages")
    css_sanitizer = require("bleach.css_sanitizer", "notebooks", "the report's notebook pages")
    fragment = fragment.decode() if isinstance(fragment, bytes) else str(fragment)
    cleaned = bleach.clean(fragment, tags=SAFE_TAGS, attributes=_safe_attribute, protocols=SAFE_PROTOCOLS,
                           strip=False, strip_comments=True,
                           css_sanitizer=css_sanitizer.CSSSanitizer(
                               allowed_css_properties=css_sanitizer.ALLOWED_CSS_PROPERTIES))
    return re.sub(r"<style\b[^>]*>(.*?)</style>", lambda m: m.group(0) if _safe_css(html.unescape(m.group(1))) else "",
                  cleaned, flags=re.IGNORECASE | re.DOTALL)


def sanitize_notebook(notebook):
    """A copy of an executed notebook (nbformat node) safe to render: outputs keep only the types of
    :data:`SAFE_OUTPUT_TYPES`, output metadata keeps only numeric image sizes, widget state is dropped.

    The HTML of ``text/html`` and ``text/markdown`` outputs and of markdown and raw cells is cleaned
    when the page is rendered (:func:`sanitize_html`, the exporter's ``clean_html`` filter).
    """
    notebook = copy.deepcopy(notebook)
    notebook.metadata.pop("widgets", None)
    for cell in notebook.cells:
        for output in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if "data" in output:
                output["data"] = {kind: value for kind, value in output["data"].items() if kind in SAFE_OUTPUT_TYPES}
            if "metadata" in output:
                output["metadata"] = {kind: {key: value for key, value in meta.items()
                                             if key in {"width", "height"} and isinstance(value, int | float)
                                             and not isinstance(value, bool)}
                                      for kind, meta in output["metadata"].items()
                                      if kind in SAFE_OUTPUT_TYPES and isinstance(meta, dict)}
    return notebook
