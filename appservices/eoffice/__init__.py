"""The Matrix ↔ e-Office integration: the connector contract's reference service and, later, the bridge."""
