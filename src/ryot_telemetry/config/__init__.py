"""The values behind ``settings.Settings``: each field's loader, by concern (``loaders``: the variable reading and
the generic loaders; ``export``: readers, OTLP and the resource; ``features``: what the recorder, the GPU gauges and
multi-process mode take). ``settings.py`` holds the one declaration (``Arguments`` and ``Settings``) and re-exports
the public names; names with a leading underscore here are private to ``settings``."""
