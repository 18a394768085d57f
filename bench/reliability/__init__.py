"""The reliability harness: faults, bad input and load against the real services (make reliability)."""
