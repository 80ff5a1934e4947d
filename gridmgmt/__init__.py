"""gridmgmt: grid-based urban management case dispatch.

Two layers live here: `gridmgmt.kernel` (config, db, errors, queue, clock, calendars, people,
units, api keys, i18n: imports nothing above it) at the bottom of the architecture, and
`gridmgmt.app` (the factory, the blueprint registry, home, demo, OpenAPI) at the top.
"""

from gridmgmt.app import create_app

__all__ = ["create_app"]
