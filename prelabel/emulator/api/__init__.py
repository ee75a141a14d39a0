"""The Segments.ai REST resources: routing, request validation and the JSON wire format.

This package turns an already-read HTTP request (:class:`~prelabel.emulator.wire.Request`) into a
:class:`~prelabel.emulator.wire.Response`; it never touches sockets, so the HTTP server can own
timing, faults and connection handling. Shapes and status codes follow ``shared/segments-api.md``:
DRF-style ``{"detail": ...}`` error bodies (the SDK classifies errors by substrings of the body),
bare JSON arrays for lists, ``404 {"detail": "Invalid page."}`` past the last page, and every
field the SDK's pydantic models require.

One module per resource (:mod:`.users`, :mod:`.datasets`, :mod:`.samples`, :mod:`.labels`,
:mod:`.assets`), the shared base and checks (:mod:`.base`, :mod:`.validation`, :mod:`.urls`), and
the route table that puts them together (:mod:`.routes`, :class:`~.routes.SegmentsApi`).
"""
