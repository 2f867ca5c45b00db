"""The citizen's own words in an email: HTML to clean text, quoted replies, signatures and mobile
footers removed. Pure functions, no I/O.

* :func:`html_to_text`: block elements become line breaks, lists keep a dash, ``<blockquote>``,
  Gmail/Outlook quote containers and signature blocks become ``>`` lines (so the quote rules
  below drop them),
  scripts and styles vanish, entities are decoded.
* :func:`clean_email_text`: cuts at the first reply header ("On ... wrote:", "Pada ...
  menulis:", "-----Original Message-----", "-----Pesan Asli-----", an Outlook ``From:/Sent:``
  block in English or Indonesian), drops ``>`` quoted lines, cuts at the signature separator
  ``-- `` and removes mobile footers ("Sent from my iPhone", "Dikirim dari ... saya").
  A forwarded message ("---------- Forwarded message ---------") is kept: it is usually the
  complaint itself.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

_BLOCK = frozenset({
    "address", "article", "aside", "div", "dl", "dt", "dd", "fieldset", "figure", "footer",
    "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p",
    "pre", "section", "table", "tr", "ul",
})
_SKIP = frozenset({"script", "style", "head", "title", "template", "noscript"})
#: Containers mail clients put around the quoted original and around signatures: their lines
#: come out as ``>`` lines, which :func:`strip_quoted` drops.
_QUOTE_CLASSES = ("gmail_quote", "yahoo_quoted", "moz-cite-prefix", "protonmail_quote",
                  "gmail_signature", "moz-signature")
_QUOTE_IDS = ("appendonsend", "divrplyfwdmsg", "x_divrplyfwdmsg", "signature")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self._current: list[str] = []
        self._skip = 0
        self._quote = 0
        self._pre = 0
        self._stack: list[tuple[str, bool]] = []  # (tag, opened a quote)

    def _break(self, explicit: bool = False) -> None:
        """End the current line (``explicit``: a ``<br>``, kept even when empty)."""
        text = "".join(self._current)
        if not self._pre:
            text = re.sub(r"[ \t\r\n\f\u00a0]+", " ", text).strip()
        if not text and not explicit:
            self._current = []
            return
        prefix = "> " * self._quote
        for line in text.split("\n") if self._pre else [text]:
            self.lines.append(prefix + line if line else "")
        self._current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
            return
        if tag == "br":
            self._break(explicit=True)
            return
        attributes = {k: (v or "") for k, v in attrs}
        quoting = tag == "blockquote" or any(
            c in attributes.get("class", "") for c in _QUOTE_CLASSES) or \
            attributes.get("id", "").lower() in _QUOTE_IDS
        if tag in _BLOCK or quoting:
            self._break()
        if tag == "li":
            self._current.append("- ")
        if tag == "pre":
            self._pre += 1
        if tag in ("td", "th") and self._current:
            self._current.append(" ")
        if tag in ("img", "hr", "input", "meta", "link", "wbr"):
            return  # void elements never close
        self._quote += quoting
        self._stack.append((tag, quoting))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
            return
        # Close up to the matching open tag (HTML in mail is rarely well formed).
        for index in range(len(self._stack) - 1, -1, -1):
            if self._stack[index][0] == tag:
                for closed, quoting in self._stack[index:]:
                    if closed in _BLOCK or quoting:
                        self._break()
                    self._quote -= quoting
                    if closed == "pre":
                        self._pre = max(0, self._pre - 1)
                del self._stack[index:]
                return

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._current.append(data)


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML mail body (quoted parts as ``>`` lines)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    parser._break()
    return _squeeze("\n".join(parser.lines))


_WROTE = re.compile(
    r"^\s*(On\s.{0,300}\swrote|Pada\s.{0,300}\s(menulis|wrote)|Le\s.{0,300}\sa écrit)\s*:\s*$",
    re.IGNORECASE | re.DOTALL)
_ORIGINAL = re.compile(
    r"^\s*-{2,}\s*(Original Message|Pesan Asli|Pesan Awal|Reply message|Balasan pesan)\s*-{2,}",
    re.IGNORECASE)
_OUTLOOK_FROM = re.compile(r"^\s*\*?(From|Dari)\s*:\*?\s", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(
    r"^\s*\*?(Sent|Date|Dikirim|Tanggal|Terkirim|To|Kepada|Subject|Subjek|Perihal)\s*:",
    re.IGNORECASE)
_FORWARDED = re.compile(
    r"^\s*-{2,}\s*(Forwarded message|Pesan terusan|Pesan yang diteruskan|Pesan diteruskan)"
    r"\s*-{2,}|^\s*(Begin forwarded message|Awal pesan yang diteruskan)\s*:",
    re.IGNORECASE)
_SIGNATURE = re.compile(r"^(-- ?|__+|—— ?)$")
_FOOTER = re.compile(
    r"^\s*(Sent from (my )?\S.{0,60}|Sent (from|with) (Outlook|Mail|Yahoo|Gmail|BlackBerry)"
    r".{0,60}|Get Outlook for .{1,30}|Dikirim dari .{1,60}|Dikirimkan dari .{1,60}"
    r"|Kirim dari .{1,60}|Terkirim dari .{1,60}|Diketik dari .{1,60})\s*$",
    re.IGNORECASE)
FOOTER_LINES = 4  # mobile footers sit at the very end: only the last few lines are checked


def _reply_header_at(lines: list[str], index: int) -> bool:
    line = lines[index]
    # "On Mon, 3 Nov 2026 at 10:00, Budi <budi@example.id> wrote:" is often wrapped.
    for span in (1, 2, 3):
        joined = " ".join(part.strip() for part in lines[index:index + span])
        if _WROTE.match(joined):
            return True
    if _ORIGINAL.match(line):
        return True
    if _OUTLOOK_FROM.match(line):
        following = [ln for ln in lines[index + 1:index + 4] if ln.strip()]
        return bool(following) and _OUTLOOK_NEXT.match(following[0]) is not None
    return False


def strip_quoted(text: str) -> str:
    """``text`` up to the first reply header, without ``>`` quoted lines."""
    lines = text.split("\n")
    kept: list[str] = []
    for index, line in enumerate(lines):
        if _FORWARDED.match(line):  # a forwarded complaint: everything after it is content
            kept.extend(ln for ln in lines[index:] if not ln.lstrip().startswith(">"))
            break
        if _reply_header_at(lines, index):
            break
        if line.lstrip().startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept)


def strip_signature(text: str) -> str:
    """``text`` without its signature (after a ``-- `` line) and mobile footers."""
    lines = text.split("\n")
    for index, line in enumerate(lines):
        if _SIGNATURE.match(line.rstrip("\r")) and index > 0:
            lines = lines[:index]
            break
    while lines and not lines[-1].strip():
        lines.pop()
    tail = max(0, len(lines) - FOOTER_LINES)
    lines = lines[:tail] + [ln for ln in lines[tail:] if not _FOOTER.match(ln)]
    return "\n".join(lines)


def _squeeze(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def clean_email_text(text: str) -> str:
    """The citizen's words: no quoted reply, no signature, no mobile footer, tidy blank lines."""
    return _squeeze(strip_signature(strip_quoted(_squeeze(text))))
