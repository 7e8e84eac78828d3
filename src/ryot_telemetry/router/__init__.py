"""Router integration: wrapping a router's OpenAI-style methods (calls and streams), the instrumentor for
``opentelemetry-instrument`` and the distro/configurator it loads.
"""
