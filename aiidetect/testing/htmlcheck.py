"""Parse a report with the standard library and check what a browser would load."""
from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

# Elements that fetch, embed or navigate; none belongs in a self-contained report.
FORBIDDEN_TAGS = {"link", "iframe", "frame", "object", "embed", "base", "form", "audio", "video", "source", "track",
                  "applet", "portal"}
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Parsed:
    tags: list[tuple[str, dict]] = field(default_factory=list)
    cards: list[dict] = field(default_factory=list)     # {"id", "class", "name", "text"}
    scripts: list[tuple[dict, str]] = field(default_factory=list)
    styles: list[tuple[dict, str]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)


class _P(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out = Parsed()
        self.stack: list[tuple[str, dict]] = []
        self.card: dict | None = None
        self.card_depth = 0
        self.in_name = False
        self.raw: tuple[str, dict] | None = None
        self.raw_text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        self.out.tags.append((tag, a))
        if tag in ("script", "style"):
            self.raw, self.raw_text = (tag, a), []
        if tag == "article" and "card" in a.get("class", "").split():
            self.card = {"id": a.get("id"), "class": a.get("class"), "name": "", "text": []}
            self.card_depth = len(self.stack)
        if self.card is not None and tag in ("p", "h3") and "file-name" in a.get("class", "").split():
            self.in_name = True
        if tag not in VOID:
            self.stack.append((tag, a))

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.raw is not None:
            (self.out.scripts if tag == "script" else self.out.styles).append((self.raw[1], "".join(self.raw_text)))
            self.raw = None
        if tag in ("p", "h3"):
            self.in_name = False
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break
        if tag == "article" and self.card is not None and len(self.stack) <= self.card_depth:
            self.card["text"] = "".join(self.card["text"])
            self.out.cards.append(self.card)
            self.card = None

    def handle_data(self, data):
        if self.raw is not None:
            self.raw_text.append(data)
            return
        self.out.text.append(data)
        if self.card is not None:
            self.card["text"].append(data)
            if self.in_name:
                self.card["name"] += data


def parse(html: str) -> Parsed:
    p = _P()
    p.feed(html)
    p.close()
    return p.out


def assert_self_contained(html: str) -> Parsed:
    """No element loads anything from outside the file, no inline handler, the CSP
    is there, and only the report's own two scripts and one style exist."""
    doc = parse(html)
    csp = [a.get("content", "") for t, a in doc.tags if t == "meta" and a.get("http-equiv", "").lower() ==
           "content-security-policy"]
    assert len(csp) == 1 and "default-src 'none'" in csp[0] and "img-src data:" in csp[0], csp
    assert "unsafe-inline" not in csp[0]
    for tag, a in doc.tags:
        assert tag not in FORBIDDEN_TAGS, (tag, a)
        for k, v in a.items():
            assert not k.startswith("on"), (tag, k, v)
            assert k not in ("style", "srcset", "action", "formaction", "background", "poster", "xlink:href"), (tag, k)
            if k == "src":
                assert v.startswith("data:image/"), (tag, v[:80])
            if k == "href":
                assert v.startswith("#"), (tag, v)
        if tag == "meta":
            assert a.get("http-equiv", "").lower() != "refresh"
    nonces = {a.get("nonce") for a, _ in doc.scripts if a.get("type") != "application/json"}
    assert len(doc.scripts) == 2 and len(nonces) == 1 and None not in nonces, [a for a, _ in doc.scripts]
    assert len(doc.styles) == 1 and doc.styles[0][0].get("nonce") in nonces
    assert "url(" not in doc.styles[0][1].replace("url(#", "") and "@import" not in doc.styles[0][1]
    return doc
