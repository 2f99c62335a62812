"""DICOMweb under ``/dicomweb``: one module per service (search: QIDO-RS, retrieve: WADO-RS, store: STOW-RS).

Signed-in sessions and bearer tokens authenticate; the same access rules as the chart apply (see
:func:`app.imaging.service.visible_clause`).
"""

from app.imaging.dicomweb import retrieve, search, store  # noqa: F401 - their routes are on the blueprint
from app.imaging.dicomweb.shared import bp

__all__ = ["bp"]
