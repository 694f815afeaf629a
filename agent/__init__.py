"""The node agent: one process per node that runs each app's node-local loops (GPU
telemetry and heartbeats from ``inventory``, backend supervision from ``scheduling``,
stalled downloads from ``models_app``) and, while it holds the housekeeper lease, the
fleet-wide passes. It is the one place that wires the apps together; no app imports it."""
