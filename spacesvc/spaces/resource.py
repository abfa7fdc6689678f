"""The Spaces configuration as a versioned resource (``spacesvc.resources.versioned``): its
enablement per environment is part of it, so enabling or disabling an environment is a new
version too."""

from __future__ import annotations

from spacesvc.audit.model import Resource
from spacesvc.resources.versioned import VersionedResource
from spacesvc.spaces import queries
from spacesvc.spaces.model import SpacesConfig

SPACES: VersionedResource[SpacesConfig] = VersionedResource(
    name="config",
    table=queries.TABLE,
    lock_id=0x5BACE5_0002,
    audit_type=Resource.SPACES_CONFIG.value,
    title="The Spaces configuration",
    noun="the configuration",
    absent="nothing is configured",
    load=queries.get_config,
)
