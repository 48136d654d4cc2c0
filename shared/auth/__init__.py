"""Who may call the API: Entra ID access tokens (tokens.py), roles and permissions (policy.py), and the
caller's memberships turned into what they may see and do (access.py)."""
