"""Routers of the REST API; ``app.main`` mounts them."""
