"""TLS contexts: always verified; a private CA can be trusted explicitly, never by turning checks off."""

from __future__ import annotations

import ssl

from worker.config import TlsSettings


def client_context(settings: TlsSettings) -> ssl.SSLContext:
    cafile = str(settings.ca_file) if settings.ca_file else None
    context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
