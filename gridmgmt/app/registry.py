"""The list of domain packages' models, so that `Base.metadata` knows every table."""

from __future__ import annotations


def load_models() -> None:
    """Import every models module so `Base.metadata` knows all tables."""
    import cases.followup
    import cases.models
    import cases.notices
    import cases.support  # noqa: F401
    import dispatch.models  # noqa: F401
    import gridmgmt.kernel.audit
    import gridmgmt.kernel.models
    import gridmgmt.kernel.security_events
    import gridmgmt.kernel.settings  # noqa: F401
    import grids.models  # noqa: F401
    import maps.models  # noqa: F401
