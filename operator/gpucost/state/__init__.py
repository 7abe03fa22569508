"""What the handlers read and write in the API, shared by all of them: the cluster snapshot, status
writes and the budget verdicts. Handler modules import this, never each other."""
