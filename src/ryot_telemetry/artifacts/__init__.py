"""Generated artifacts: the Grafana dashboard, the SLO burn-rate rules and the docs tables, all from the catalogue."""
