"""The worker process: leases partitions, decides pending requests in locked transactions, sets poison aside."""
