"""Rendering: documents (receipts, reports, status pages) to printer bytes.

`document` holds the layout model and the sanitising that keeps event data from
ever becoming printer commands; `languages` turns a laid-out document into text,
ESC/POS or PCL bytes; `templates` builds the documents.
"""

__all__ = ["document", "languages", "templates"]
