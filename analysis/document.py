"""A small report document (headings, text, callouts, tables, images) rendered to Markdown and to one
self-contained HTML file (images embedded as base64)."""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field

import pandas as pd

_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f2f2f2}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}
.callout{background:#fff4e0;border-left:5px solid #e69500;padding:.6em 1em;margin:1em 0}
code{background:#f4f4f4;padding:0 3px}figcaption{font-size:13px;color:#555}"""


@dataclass(frozen=True)
class Link:
    """A table cell (or one part of a list cell) shown as `text`, linked to `url` where there is one."""

    text: str
    url: str = ""


@dataclass
class Document:
    """An ordered list of blocks: ("heading", level, text), ("text", str), ("callout", str), ("bullets", list),
    ("table", DataFrame), ("image", path, caption). In text, callouts and bullets `backticks` mark code."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Add a section heading."""
        self.blocks.append(("heading", level, text))

    def text(self, text: str) -> None:
        """Add a paragraph."""
        self.blocks.append(("text", text))

    def callout(self, text: str) -> None:
        """Add a highlighted warning paragraph."""
        self.blocks.append(("callout", text))

    def bullets(self, items: list[str]) -> None:
        """Add a bulleted list."""
        self.blocks.append(("bullets", list(items)))

    def table(self, frame: pd.DataFrame) -> None:
        """Add a table (cells shown as their string form; missing values as empty cells; a Link, or a list of
        Links and strings shown one after another separated by ', ', as links)."""
        self.blocks.append(("table", frame))

    def image(self, path: str, caption: str) -> None:
        """Add a PNG image with a caption."""
        self.blocks.append(("image", path, caption))

    def to_markdown(self) -> str:
        """Markdown; images are linked by file name (they sit beside the report)."""
        out = [f"# {self.title}", ""]
        for kind, *body in self.blocks:
            if kind == "heading":
                out += ["#" * body[0] + " " + body[1], ""]
            elif kind == "text":
                out += [body[0], ""]
            elif kind == "callout":
                out += [f"> **{body[0]}**", ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in body[0]] + [""]
            elif kind == "table":
                out += _markdown_table(body[0]) + [""]
            elif kind == "image":
                out += [f"![{body[1]}]({os.path.basename(body[0])})", "", f"*{body[1]}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        """One self-contained HTML page."""
        out = ["<!DOCTYPE html><html><head><meta charset='utf-8'>", f"<title>{html.escape(self.title)}</title>",
               f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(self.title)}</h1>"]
        for kind, *body in self.blocks:
            if kind == "heading":
                out.append(f"<h{body[0]}>{html.escape(body[1])}</h{body[0]}>")
            elif kind == "text":
                out.append(f"<p>{_inline(body[0])}</p>")
            elif kind == "callout":
                out.append(f"<div class='callout'><strong>{_inline(body[0])}</strong></div>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in body[0]) + "</ul>")
            elif kind == "table":
                out.append(_html_table(body[0]))
            elif kind == "image":
                with open(body[0], "rb") as handle:
                    data = base64.b64encode(handle.read()).decode()
                out.append(f"<figure><img alt='{html.escape(body[1])}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{html.escape(body[1])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out)


def _inline(text: str) -> str:
    """Escaped HTML of a text where `backticks` mark code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _cell(value) -> str:
    if value is None or (not isinstance(value, (list, tuple, str)) and pd.isna(value)):
        return ""
    return str(value)


def _markdown_cell(value) -> str:
    if isinstance(value, list):
        return ", ".join(_markdown_cell(part) for part in value)
    if isinstance(value, Link):
        return f"[{value.text}]({value.url})" if value.url else value.text
    return _cell(value).replace("|", "\\|").replace("\n", " ")


def _html_cell(value) -> str:
    if isinstance(value, list):
        return ", ".join(_html_cell(part) for part in value)
    if isinstance(value, Link):
        text = html.escape(value.text)
        return f"<a href='{html.escape(value.url, quote=True)}'>{text}</a>" if value.url else text
    return html.escape(_cell(value))


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    def row(cells):
        return "| " + " | ".join(_markdown_cell(c) for c in cells) + " |"

    return [row(frame.columns), "|" + "---|" * len(frame.columns)] + [row(r) for r in frame.itertuples(index=False)]


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in r) + "</tr>"
                   for r in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
