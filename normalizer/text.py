"""Text for comparison: the form in which two complaints are compared, never shown or stored.

The citizen's words are never changed (``normalize.clean_text`` keeps them as written); this
module derives a *matching text* from them so that "lampu jln udh mati bgt!!! 😡" and
"Lampu jalan sudah padam" look alike to the classifier and to near-duplicate detection:

1. Unicode NFC, lower case; HTML tags and entities, URLs, e-mail addresses and @mentions removed.
2. Emoji, symbols and punctuation become spaces; ``anak-anak`` and ``anak2`` become ``anak``.
3. Letters repeated three times or more are squashed (``rusaaak`` → ``rusak``).
4. Common SMS/chat abbreviations are expanded (``yg`` → ``yang``, ``gak`` → ``tidak``, ...) and a
   few synonyms are brought to one word (``padam`` → ``mati``, ``pju`` → ``lampu jalan``).
5. Indonesian stopwords are removed and each word is stemmed with Sastrawi (memoized per word,
   since Sastrawi is slow; the vocabulary of complaints is small, so the cache hits).

Pure functions, no I/O. Sastrawi reads its dictionary once, on first use.
"""

from __future__ import annotations

import html
import re
import unicodedata
from functools import lru_cache

from Sastrawi.Stemmer.StemmerFactory import StemmerFactory  # type: ignore[import-untyped,unused-ignore]

#: Word shingle size used by :func:`shingles` when none is given.
DEFAULT_SHINGLE_K = 2
#: Stems are memoized per word; the vocabulary of complaints is small, this bounds memory.
STEM_CACHE_SIZE = 65536

#: SMS/chat abbreviations and misspellings → the word they stand for (may be several words).
ABBREVIATIONS: dict[str, str] = {
    "yg": "yang", "yng": "yang", "tdk": "tidak", "gak": "tidak", "ga": "tidak", "gk": "tidak",
    "nggak": "tidak", "ngga": "tidak", "enggak": "tidak", "engga": "tidak", "tak": "tidak",
    "kagak": "tidak", "ndak": "tidak", "udh": "sudah", "sdh": "sudah", "udah": "sudah",
    "dah": "sudah", "blm": "belum", "blum": "belum", "jln": "jalan", "jl": "jalan",
    "sy": "saya", "sya": "saya", "aku": "saya", "bgt": "banget", "bngt": "banget",
    "kpn": "kapan", "utk": "untuk", "u": "untuk", "dgn": "dengan", "dg": "dengan",
    "dr": "dari", "drpd": "daripada", "krn": "karena", "karna": "karena", "krna": "karena",
    "tsb": "tersebut", "sdg": "sedang", "lg": "lagi", "kmrn": "kemarin", "kmarin": "kemarin",
    "kemaren": "kemarin", "bs": "bisa", "bsa": "bisa", "org": "orang", "tp": "tapi",
    "tpi": "tapi", "sm": "sama", "dll": "dan lain lain", "dsb": "dan sebagainya",
    "jg": "juga", "jga": "juga", "sj": "saja", "aja": "saja", "aj": "saja", "sja": "saja",
    "hrs": "harus", "brp": "berapa", "brapa": "berapa", "msh": "masih", "masi": "masih",
    "bbrp": "beberapa", "tlg": "tolong",
    "tolonk": "tolong", "mhn": "mohon", "trs": "terus", "trus": "terus", "knp": "kenapa",
    "gmn": "bagaimana", "gimana": "bagaimana", "gmana": "bagaimana", "bgmn": "bagaimana",
    "dmn": "di mana", "dimana": "di mana", "kl": "kalau", "klo": "kalau", "kalo": "kalau",
    "spt": "seperti", "kyk": "kayak", "skrg": "sekarang", "skrang": "sekarang",
    "skg": "sekarang", "hr": "hari", "mgg": "minggu", "mg": "minggu", "bln": "bulan",
    "thn": "tahun", "th": "tahun", "dpn": "depan", "blkg": "belakang",
    "sblh": "sebelah", "smpg": "simpang", "kel": "kelurahan", "kec": "kecamatan",
    "kab": "kabupaten", "prov": "provinsi", "gg": "gang", "perum": "perumahan",
    "no": "nomor", "pdhl": "padahal", "bener": "benar", "bnr": "benar", "emg": "memang",
    "emang": "memang", "mmg": "memang", "lbh": "lebih", "sgt": "sangat", "bkn": "bukan",
    "ato": "atau", "atw": "atau", "pd": "pada", "kt": "kita", "kmi": "kami",
    "dpt": "dapat", "tgl": "tanggal", "ttg": "tentang", "tlp": "telepon", "telp": "telepon",
    "hub": "hubungi", "info": "informasi", "infokan": "informasikan", "pengen": "ingin",
    "pgn": "ingin", "pingin": "ingin", "mau": "ingin", "bapak2": "bapak", "ibu2": "ibu",
    "rmh": "rumah", "sklh": "sekolah", "pemkot": "pemerintah kota",
    "pemkab": "pemerintah kabupaten", "pemprov": "pemerintah provinsi",
}

#: Different words for one thing, brought to one word so that two wordings compare equal.
#: Applied after abbreviations and before stemming; values are stems already.
SYNONYMS: dict[str, str] = {
    "padam": "mati", "pju": "lampu jalan", "lpj": "lampu jalan", "bolong": "lubang",
    "berlobang": "lubang", "lobang": "lubang", "tergenang": "genang", "genangan": "genang",
    "got": "selokan", "parit": "selokan", "drainase": "selokan", "comberan": "selokan",
    "tps": "sampah", "ledeng": "pdam", "perumdam": "pdam", "antrian": "antre",
    "antri": "antre", "antrean": "antre", "rsud": "rumah sakit", "rs": "rumah sakit",
    "pln": "listrik", "byarpet": "mati", "ektp": "ktp",
}

#: Words that carry no meaning for comparison (function words, pronouns, politeness, fillers).
STOPWORDS: frozenset[str] = frozenset("""
    ada adalah agar akan aku amat anda antara apa apakah atas atau bagai bagaimana bahkan
    bahwa banget banyak baru bawah beberapa begitu belum benar berapa bersama beserta biar
    bila bisa boleh buat bukan cuma dalam dan dapat dari daripada demikian dengan di dia
    dong dua ya yaitu yakni yang gitu hal hanya harus hingga ia ialah ini itu jadi jangan
    jika juga justru kalau kami kamu kan kapan karena kata ke kenapa kepada ketika kita
    koq kok lagi lah lain lalu lebih mana masih maupun melalui memang mereka meski mohon
    mungkin nah namun nya oleh pada padahal para pak bapak ibu bu per perlu pun saat saja
    sama sampai sangat saya se sebab sebagai sebelum sedang sehingga sekali sekarang selalu
    seperti serta sesudah setelah sih siapa sini situ suatu sudah supaya tadi tapi telah
    tentang terhadap terus tersebut tetapi tidak tolong untuk walau wah yah deh dll sebagainya
    min admin mas mbak kak gan bang om tante sudilah kiranya terima kasih makasih tks thx
    assalamualaikum wr wb salam halo hallo selamat pagi siang sore malam izin ijin lapor
    melaporkan laporan warga kami pihak terkait mohon ditindaklanjuti tindak lanjut segera
    dimohon harap tolonglah agak cukup sekitar hampir sering kadang selama sejak dulu
    kemarin hari minggu bulan tahun jam sudahlah lho loh kah pula begini sana punya
    jadinya makanya soalnya apalagi juga mau ingin sendiri semua setiap tiap sedikit pernah
""".split())

_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w-]+\.(?:com|id|net|org|co\.id|go\.id)/\S*",
                  re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.%+-]+@[\w-]+(?:\.[\w-]+)+\b")
_MENTION = re.compile(r"(?<!\w)@\w+")
_REDUPLICATION = re.compile(r"\b([^\W\d_]{2,})-\1\b")  # anak-anak → anak
_REDUP_TWO = re.compile(r"\b([^\W\d_]{3,})2\b")  # anak2 → anak
_REPEATS = re.compile(r"([^\W\d_])\1{2,}")  # rusaaak → rusak
#: Words that legitimately hold a doubled letter; "saaaat" squashes back to "saat", not "sat".
_DOUBLE_LETTER_WORDS = frozenset(
    {"saat", "maaf", "taat", "manfaat", "jumaat", "allah", "sunnah", "tt", "sdd", "ii", "iii"}
)


@lru_cache(maxsize=1)
def _stemmer() -> object:
    """The Sastrawi stemmer, built once (it loads a 30,000-word dictionary)."""
    return StemmerFactory().create_stemmer()


@lru_cache(maxsize=STEM_CACHE_SIZE)
def stem(word: str) -> str:
    """The Sastrawi stem of one lower-case word (memoized). Numbers and codes are kept as they
    are; a word Sastrawi cannot reduce is returned unchanged."""
    if not word.isalpha() or len(word) <= 3:
        return word
    stemmed = _stemmer().stem(word)  # type: ignore[attr-defined]
    return str(stemmed) or word


def _squash(word: str) -> str:
    """Squash letters repeated three times or more (``rusaaak`` → ``rusak``)."""
    if not _REPEATS.search(word):
        return word
    double = _REPEATS.sub(r"\1\1", word)
    if double in _DOUBLE_LETTER_WORDS:
        return double
    return _REPEATS.sub(r"\1", word)


#: Texts whose plain and routing forms are remembered: normalising a complaint and
#: fingerprinting it read the same text up to five times, one right after the other.
TEXT_CACHE = 64


@lru_cache(maxsize=TEXT_CACHE)
def plain_text(text: str, *, keep_mentions: bool = False, keep_questions: bool = False) -> str:
    """Steps 1–3 of the pipeline: lower-case words without markup, links, emoji or punctuation.

    Keeps every word (no abbreviation expansion, stopword removal or stemming), so place names
    and numbers can still be found in it: ``"Jl. A. Yani No.5 🙏"`` → ``"jl a yani no 5"``.
    ``keep_mentions`` keeps ``@PDAMBalikpapan`` as the word ``pdambalikpapan`` (a routing hint);
    ``keep_questions`` keeps each ``?`` as a word of its own.
    """
    text = unicodedata.normalize("NFC", text)
    text = html.unescape(_TAGS.sub(" ", text)).lower()
    text = _URL.sub(" ", text)
    text = _EMAIL.sub(" ", text)
    if not keep_mentions:
        text = _MENTION.sub(" ", text)
    text = _REDUPLICATION.sub(r"\1", text)
    text = _REDUP_TWO.sub(r"\1", text)
    # Everything that is not a letter or a digit (punctuation, emoji, symbols) becomes a space.
    chars = [c if c.isalnum() else (" ? " if keep_questions and c == "?" else " ") for c in text]
    return " ".join(_squash(w) for w in "".join(chars).split())


def expand_abbreviations(words: list[str]) -> list[str]:
    """Expand SMS/chat abbreviations (``yg`` → ``yang``); may change the word count."""
    out: list[str] = []
    for word in words:
        out.extend(ABBREVIATIONS.get(word, word).split())
    return out


@lru_cache(maxsize=TEXT_CACHE)
def routing_text(text: str) -> str:
    """The text that routing rules and the gazetteer read: :func:`plain_text` with @mentions and
    question marks kept and abbreviations expanded, but every word still as written (no
    synonyms, stopwords or stems), so operators write rules in ordinary Indonesian.

    >>> routing_text("Lampu jln udh mati, kpn dibenerin? @dishubsmd")
    'lampu jalan sudah mati kapan dibenerin ? dishubsmd'
    """
    return " ".join(expand_abbreviations(
        plain_text(text, keep_mentions=True, keep_questions=True).split()))


def expand(words: list[str]) -> list[str]:
    """Expand abbreviations and bring synonyms to one word (may change the word count)."""
    out: list[str] = []
    for word in expand_abbreviations(words):
        out.extend(SYNONYMS.get(word, word).split())
    return out


def tokens(text: str) -> list[str]:
    """The matching words of ``text``: expanded, without stopwords, stemmed, in order."""
    words = expand(plain_text(text).split())
    return [stem(w) for w in words if w not in STOPWORDS and stem(w) not in STOPWORDS]


def matching_text(text: str) -> str:
    """The form of ``text`` used for comparison only (never shown, never stored as the complaint).

    >>> matching_text("Lampu jln di dpn SDN 003 udh matiii 3 hr!!! 😡 https://t.co/x")
    'lampu jalan depan sdn 003 mati 3'
    """
    return " ".join(tokens(text))


def shingles(text: str, k: int = DEFAULT_SHINGLE_K) -> set[str]:
    """Word ``k``-shingles of the matching text, plus its single words.

    Single words keep short complaints comparable (a 3-word complaint has only 2 bigrams); the
    ``k``-shingles reward the same words in the same order. ``k=1`` gives the word set.
    """
    if k < 1:
        raise ValueError("shingle size k must be at least 1")
    words = tokens(text)
    out = set(words)
    if k > 1:
        out.update(" ".join(words[i:i + k]) for i in range(len(words) - k + 1))
    return out
