"""Stage types, one file each. Importing this package imports every stage module so their `@STAGES.register`
decorators run; a new stage type is a new file here (or an entry point in group `posttrain.stages`)."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")
