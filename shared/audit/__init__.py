"""The audit log: who did (or tried to do) what, to which resource, when, from which client, and how it ended."""
