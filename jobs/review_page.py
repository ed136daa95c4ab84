"""The review page served at /review: one static HTML page that signs in with a key and calls the API."""

REVIEW_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>copyscope review</title></head>
<body><h1>copyscope review</h1><p>Sign in with a curator key.</p></body></html>"""
