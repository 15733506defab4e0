"""Generated from proto/crm_hub/v1 by scripts/protos.py. Do not edit."""
