"""FHIR R4 (``/fhir``): one more face of the domain services, like the HTML pages and the JSON API.

Each module maps one family of domain models to FHIR resources and registers them in
:mod:`app.fhir.search`; :mod:`app.fhir.routes` serves whatever is registered and says so in the
CapabilityStatement. Nothing here keeps a copy of the data.
"""

from app.fhir import directory, imaging, medications, patients, reading, records, related, scheduling  # noqa: F401
