"""Pure domain: MGN's states, transitions and rules. Imports no HTTP, SQL or sockets."""
