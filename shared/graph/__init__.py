"""Microsoft Graph behind one small interface: the domain code never imports msgraph-sdk."""
