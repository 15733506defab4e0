"""Operating crm_hub: metrics (Prometheus), traces (OpenTelemetry), readiness and the operations address.

Ground-level like logging: every layer may report here; nothing here knows the layers above it.
"""
