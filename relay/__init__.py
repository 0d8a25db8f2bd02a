"""neo-teams-relay: bridges Microsoft Teams bots to the Neo chat API."""
