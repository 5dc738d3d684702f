"""Built-in op ``stats``: harnesses send their telemetry samples."""

from .. import telemetry
from ..broker import ROLES_ALL, Op, arg, no_extra_args
from ..hookspecs import hookimpl


def stats(hive, who, args):
    no_extra_args(args, ("samples",))
    samples = telemetry.validate_samples(arg(args, "samples", list))
    return {"stored": telemetry.record(hive, who.name, samples)}


@hookimpl
def broker_ops(hive):
    return {"stats": Op(stats, ROLES_ALL, "store telemetry samples")}
