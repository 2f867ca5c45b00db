"""Edits of a complaint's text: the text history kept in ``Complaint.revisions``.

A citizen who edits their message (Telegram ``edited_message``) changes the complaint, not the
number of complaints. Every version is kept, oldest first; the newest by the time the citizen
wrote it becomes ``title``/``body``, so edits that arrive out of order still end on the latest
text. Applying the same edit twice changes nothing, which makes redelivery harmless.
"""

from __future__ import annotations

from normalizer.schema import Complaint, Revision

#: Versions kept per complaint: the first text and the newest ones (an edit war must not grow
#: a complaint without bound).
MAX_REVISIONS = 20

#: Derived fields an edit may change, unless the citizen chose them explicitly.
DERIVED = ("classification", "category", "agency", "incident_date")


def _version(complaint: Complaint) -> Revision:
    return Revision(native_id=complaint.native_id, at=complaint.sent_at or complaint.received_at,
                    title=complaint.title, body=complaint.body)


def apply_edit(current: Complaint, edit: Complaint) -> Complaint | None:
    """``current`` with ``edit``'s text added to its history; None when already applied.

    ``edit`` is the edited message normalised on its own (its ``native_id`` names the edit,
    its ``sent_at`` is the edit time). Identity, reporter, attachments, location and linkage
    stay those of ``current``.
    """
    versions = list(current.revisions) or [_version(current)]
    if any(v.native_id == edit.native_id for v in versions):
        return None
    versions.append(_version(edit))
    versions.sort(key=lambda v: v.at)  # stable: equal times keep arrival order
    if len(versions) > MAX_REVISIONS:
        versions = versions[:1] + versions[-(MAX_REVISIONS - 1):]
    update: dict[str, object] = {"revisions": tuple(versions)}
    if versions[-1].native_id == edit.native_id:
        update["title"], update["body"] = edit.title, edit.body
        decisions = dict(current.audit.decisions)
        for field in DERIVED:
            rule = decisions.get(field)
            if rule == "citizen" or (rule is None and field not in edit.audit.decisions):
                continue  # chosen by the citizen, or never derived: the original stands
            update[field] = getattr(edit, field)
            if field in edit.audit.decisions:
                decisions[field] = edit.audit.decisions[field]
            else:
                decisions.pop(field, None)
        update["audit"] = current.audit.model_copy(update={"decisions": decisions})
    return current.model_copy(update=update)


def revision(complaint: Complaint) -> int:
    """How many times the complaint's text was edited (0 when never)."""
    return max(len(complaint.revisions) - 1, 0)
