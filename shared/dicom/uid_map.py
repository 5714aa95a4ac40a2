"""UID replacement with the deployment key (PS3.15 §E.1.1 action U). Standard library only:
the store path and the index adapters use it without loading pydicom.

The anonymizer (``shared.dicom.anonymize``) replaces every UID with :func:`map_uid`; the
index keeps the replaced Study, Series and SOP Instance UIDs of each instance, written at
store time (:class:`UidMap`), so that a de-identified view can be queried by them.
"""

from __future__ import annotations

import hashlib
import hmac

DICOM_UID_ROOT = "1.2.840.10008."


def map_uid(uid: str, key: bytes) -> str:
    """Deterministic replacement: '2.25.' + decimal of the first 128 bits of HMAC-SHA256(key, uid).

    The same UID under the same key always gives the same result, so instances fetched one
    by one keep their study/series structure and their references (PS3.15 §E.1.1, action U;
    PS3.5 §B.2 for the ``2.25`` UUID-derived root, at most 44 characters).
    """
    digest = hmac.new(key, uid.strip("\0 ").encode("ascii"), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def replace_uid(uid: str, key: bytes) -> str:
    """What the anonymizer puts in place of ``uid``: well-known DICOM UIDs
    (``1.2.840.10008.``) and empty values stay, every other UID is :func:`map_uid`'s."""
    uid = uid.strip("\0 ")
    if not uid or uid.startswith(DICOM_UID_ROOT):
        return uid
    return map_uid(uid, key)


class UidMap:
    """:func:`replace_uid` with one key, and a fingerprint of that key (not the key: the
    SQLite index records which key its de-identified UIDs were made with)."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.fingerprint = hmac.new(key, b"o3 de-identified UID index", hashlib.sha256).hexdigest()[
            :32
        ]

    def __call__(self, uid: str) -> str:
        return replace_uid(uid, self._key)
