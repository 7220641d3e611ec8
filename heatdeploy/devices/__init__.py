"""Device profiles (TOML: backend, precision, builder/session options per target) and the machine probe.

Standard library only, so ``heatdeploy devices`` and ``heatdeploy devices probe`` work on a bare Jetson.
"""

from heatdeploy.devices.probe import ProbeResult, probe, probe_lines, recommend
from heatdeploy.devices.profiles import (
    DeviceProfile,
    DeviceProfileError,
    describe_profiles,
    list_profiles,
    load_profile,
    resolve_opset,
    session_options,
)

__all__ = ["DeviceProfile", "DeviceProfileError", "ProbeResult", "describe_profiles", "list_profiles",
           "load_profile", "probe", "probe_lines", "recommend", "resolve_opset", "session_options"]
