"""Deterministic complaint ids and the tracking codes citizens type on their phones.

* The complaint id is a hash of ``(channel, account, native id)``: a redelivered message gets the
  same id, so exact dedup is a unique key, not a guess.
* The tracking code is derived from the id: 10 symbols of Crockford base32 (50 bits), shown as
  ``XXXXX-XXXXX``. Crockford's alphabet has no I, L, O or U, so nothing is ambiguous when read
  aloud or typed; :func:`parse_tracking_code` accepts lower case, missing hyphens and the usual
  confusions (O for 0, I/L for 1). A collision with another complaint's code is resolved at
  intake by deriving again with the next ``attempt``.
"""

from __future__ import annotations

import hashlib
import re

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_SYMBOLS = 10  # 50 bits: unguessable enough for a status page, short enough to type.
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1", "U": "V"})
_CODE_RE = re.compile(rf"^[{CROCKFORD}]{{{CODE_SYMBOLS}}}$")


def complaint_id(channel: str, account: str, native_id: str) -> str:
    """The complaint id for a channel message: 32 lowercase hex characters."""
    # Length-prefixed parts: no choice of separator can make two different triples collide.
    key = "".join(f"{len(part)}:{part};" for part in ("lapor.v1", channel, account, native_id))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def tracking_code(complaint_id: str, attempt: int = 0) -> str:
    """The tracking code derived from a complaint id (``attempt`` > 0 after a collision)."""
    seed = complaint_id if attempt == 0 else f"{complaint_id}#{attempt}"
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") >> (64 - 5 * 10)
    symbols = [CROCKFORD[(number >> (5 * i)) & 31] for i in reversed(range(CODE_SYMBOLS))]
    code = "".join(symbols)
    return f"{code[:5]}-{code[5:]}"


def parse_tracking_code(text: str) -> str | None:
    """Normalise what a citizen typed into the canonical ``XXXXX-XXXXX`` form, or None."""
    cleaned = re.sub(r"[\s\-_.]", "", text.strip().upper()).translate(_CONFUSABLE)
    if not _CODE_RE.match(cleaned):
        return None
    return f"{cleaned[:5]}-{cleaned[5:]}"
