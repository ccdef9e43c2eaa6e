"""What agents are owed, the batches that pay it, and the ledger of what was paid."""
