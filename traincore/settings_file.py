"""Every setting of a run in a file beside its outputs, instead of a 100-line dump at start-up:
the log shows a short header and names this file."""
import json
import os

from .files import write_json_atomic


def plain(value):
    """A setting as JSON holds it (tuples as lists; objects such as a MethodConfig or a device
    as their text)."""
    return json.loads(json.dumps(value, default=str))


def write_settings(args, path, skip=("procs",)) -> str:
    """vars(args) -> `path` (JSON); returns the path. The objects scripts hang on args (the
    process group) are left out."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json_atomic({k: plain(v) for k, v in vars(args).items() if k not in skip}, path)
    return path
