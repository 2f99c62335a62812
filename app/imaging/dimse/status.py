"""DIMSE status codes the listener answers with, and failure statuses that say why (Error Comment)."""

from __future__ import annotations

from pydicom.dataset import Dataset

SUCCESS = 0x0000
PENDING = 0xFF00
CANCELLED = 0xFE00
NOT_AUTHORIZED = 0x0124  # PS3.7 C.1.4 "Refused: Not Authorized": the peer may not use this service
OUT_OF_RESOURCES = 0xA700  # C-STORE: could not be written (retry); C-FIND/MOVE/GET: too many matches
IDENTIFIER_MISMATCH = 0xA900  # the identifier is malformed or does not fit the information model
CANNOT_UNDERSTAND = 0xC000  # C-STORE: the file was refused; C-FIND and retrievals: unable to process
CONFLICT = 0xC001  # C-STORE: another object is stored under this SOP Instance UID; the original is kept
SUBOPERATIONS_FAILED = 0xA702  # C-MOVE/C-GET: out of resources, unable to perform sub-operations


def failure(status: int, comment: str) -> Dataset:
    """A failure status with its Error Comment (0000,0902), which the peer logs (at most 64 characters)."""
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = comment[:64]
    return answer
