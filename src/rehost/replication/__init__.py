"""Block replication from agents to replication servers.

``protocol`` (the wire protocol and a blocking client) and ``auth`` are standard-library only so the agent
can carry them; importing this package must stay free of anything else, which is why it imports nothing.
"""
