"""Cleaning an email body down to the citizen's words."""

from __future__ import annotations

import pytest

from normalizer.email_text import clean_email_text, html_to_text

WORDS = "Saluran air di Jl. Kadrie Oening tersumbat sampah."


@pytest.mark.parametrize("tail", [
    "\n\nOn Mon, 2 Nov 2026 at 09:00, LAPOR <lapor@kaltimprov.go.id> wrote:\n> lama",
    "\n\nOn Mon, 2 Nov 2026 at 09:00, LAPOR Kaltim\n<lapor@kaltimprov.go.id> wrote:\n> lama",
    "\n\nPada tanggal Sen, 2 Nov 2026 09.00, LAPOR <lapor@kaltimprov.go.id> menulis:\n> lama",
    "\n\n-----Original Message-----\nFrom: LAPOR\nSent: Monday\n\nlama",
    "\n\n-----Pesan Asli-----\nDari: LAPOR\n\nlama",
    "\n\nFrom: LAPOR <lapor@kaltimprov.go.id>\nSent: Monday, November 2, 2026\nTo: Budi\n\nlama",
    "\n\nDari: LAPOR <lapor@kaltimprov.go.id>\nDikirim: Senin, 2 November 2026\n\nlama",
    "\n\n-- \nBudi Santoso\n0812-5555-1234",
    "\n\nSent from my iPhone",
    "\n\nDikirim dari Yahoo Mail di Android",
    "\n\nGet Outlook for Android",
    "\n\nDikirim dari iPhone saya",
])
def test_replies_signatures_and_footers_are_cut(tail: str) -> None:
    assert clean_email_text(WORDS + tail) == WORDS


def test_interleaved_quotes_are_dropped_but_answers_kept() -> None:
    text = "> Di mana lokasinya?\nDi depan pasar.\n> Sejak kapan?\nSejak Senin."
    assert clean_email_text(text) == "Di depan pasar.\nSejak Senin."


def test_a_forwarded_complaint_is_kept_whole() -> None:
    text = ("Mohon dibantu.\n\n---------- Forwarded message ---------\nFrom: Warga "
            "<w@example.id>\nDate: Sun, 1 Nov 2026\nSubject: Banjir\nTo: kel@example.id\n\n"
            + WORDS)
    assert clean_email_text(text) == text


def test_words_that_merely_look_like_a_header_stay() -> None:
    text = "From: the market to the river the road is broken.\nPlease fix it."
    assert clean_email_text(text) == text
    assert clean_email_text("Sent from the village head to us: " + WORDS) == \
        "Sent from the village head to us: " + WORDS


def test_blank_lines_are_squeezed() -> None:
    assert clean_email_text("\n\nA\n\n\n\n\nB  \r\n") == "A\n\nB"


def test_html_to_text() -> None:
    html = ("<div>Baris satu<br/>baris&nbsp;dua</div><p>Paragraf <b>tebal</b></p>"
            "<table><tr><td>RT</td><td>05</td></tr></table><pre>  kode\n  rapi</pre>"
            "<blockquote>dikutip</blockquote><style>x{}</style><script>y()</script>")
    assert html_to_text(html) == ("Baris satu\nbaris dua\nParagraf tebal\nRT 05\n  kode\n"
                                  "  rapi\n> dikutip")
    assert clean_email_text(html_to_text(html)).endswith("rapi")


def test_unclosed_html_does_not_lose_text() -> None:
    assert html_to_text("<p>Satu<div>Dua <span>Tiga") == "Satu\nDua Tiga"


def test_html_signature_blocks_are_dropped() -> None:
    html = ("<div>Got mampet di Jl. Cendana.</div><div class=\"gmail_signature\">Budi<br>"
            "0812 5555 1234</div><div id=\"Signature\">Dikirim dari Outlook</div>")
    assert clean_email_text(html_to_text(html)) == "Got mampet di Jl. Cendana."
