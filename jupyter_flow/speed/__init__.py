"""What makes runs start fast: the fork server (zygotes), the agent that keeps imports warm, import trims."""
