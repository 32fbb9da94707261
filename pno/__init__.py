"""PNO Physics Bench: configuration, command line and the offline settings of the stack."""
