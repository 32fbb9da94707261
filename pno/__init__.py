"""PNO Physics Bench: configuration, command line and the offline settings of the stack."""

#: Offline switches: nothing here should try the network. ``pno.cli`` sets them (unless already
#: set) before prefect or mlflow are imported; ``pno.stack`` passes them to the servers it starts.
OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # the temporary local Prefect server can miss its default 20 s start-up limit under load
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "GX_ANALYTICS_ENABLED": "false",
}
