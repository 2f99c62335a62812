"""``python -m app.imaging.scp`` starts the DICOM listener (see :mod:`app.imaging.dimse.listener`)."""

from __future__ import annotations

from app.imaging.dimse.listener import Listener, main

__all__ = ["Listener", "main"]

if __name__ == "__main__":
    main()
