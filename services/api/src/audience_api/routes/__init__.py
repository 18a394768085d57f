"""HTTP routes of the gateway: thin, decode, call one service method, return."""
