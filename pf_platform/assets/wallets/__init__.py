"""The wallet snapshot: agent_wallets, its five-minute schedule and its freshness policy."""
